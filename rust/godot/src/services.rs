//! Service objects that later issues fill (multiplayer, analytics, cdn). They exist now so
//! `AeThexCloud.multiplayer.matchmaking` and friends resolve and show in the class reference; they
//! plug into the same request/result/signal machinery as `auth` and `saves`.

use godot::classes::RefCounted;
use godot::obj::{Base, Gd};
use godot::register::GodotClass;

/// Realtime multiplayer. Reach it as `AeThexCloud.multiplayer`.
///
/// @experimental Not implemented yet: only its sub-objects exist.
#[derive(GodotClass)]
#[class(no_init, base = RefCounted)]
pub struct AeThexMultiplayer {
    /// Matchmaking queues and tickets.
    #[var(no_set)]
    matchmaking: Gd<AeThexMatchmaking>,
    /// Voice chat.
    #[var(no_set)]
    voice: Gd<AeThexVoice>,
    base: Base<RefCounted>,
}

/// Matchmaking. Reach it as `AeThexCloud.multiplayer.matchmaking`.
///
/// @experimental Not implemented yet.
#[derive(GodotClass)]
#[class(no_init, base = RefCounted)]
pub struct AeThexMatchmaking {
    base: Base<RefCounted>,
}

/// Voice chat. Reach it as `AeThexCloud.multiplayer.voice`.
///
/// @experimental Not implemented yet.
#[derive(GodotClass)]
#[class(no_init, base = RefCounted)]
pub struct AeThexVoice {
    base: Base<RefCounted>,
}

/// Gameplay analytics events. Reach it as `AeThexCloud.analytics`.
///
/// @experimental Not implemented yet.
#[derive(GodotClass)]
#[class(no_init, base = RefCounted)]
pub struct AeThexAnalytics {
    base: Base<RefCounted>,
}

/// Content delivery (downloadable assets). Reach it as `AeThexCloud.cdn`.
///
/// @experimental Not implemented yet.
#[derive(GodotClass)]
#[class(no_init, base = RefCounted)]
pub struct AeThexCdn {
    base: Base<RefCounted>,
}

/// Builds an empty service object.
macro_rules! empty_service {
    ($($class:ident),*) => {$(
        impl $class {
            pub fn create() -> Gd<Self> {
                Gd::from_init_fn(|base| Self { base })
            }
        }
    )*};
}
empty_service!(AeThexMatchmaking, AeThexVoice, AeThexAnalytics, AeThexCdn);

impl AeThexMultiplayer {
    pub fn create(matchmaking: Gd<AeThexMatchmaking>, voice: Gd<AeThexVoice>) -> Gd<Self> {
        Gd::from_init_fn(|base| Self {
            matchmaking,
            voice,
            base,
        })
    }
}
