//! Service objects that later issues fill (voice, analytics, cdn). They exist now so
//! `AeThexCloud.multiplayer.voice` and friends resolve and show in the class reference; they
//! plug into the same request/result/signal machinery as `auth` and `saves`.

use godot::classes::RefCounted;
use godot::obj::{Base, Gd};
use godot::register::GodotClass;

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
empty_service!(AeThexAnalytics, AeThexCdn);
