//! Service objects that later issues fill (cdn). They exist now so `AeThexCloud.cdn` resolves
//! and shows in the class reference; it plugs into the same request/result/signal machinery as
//! `auth` and `saves`.

use godot::classes::RefCounted;
use godot::obj::{Base, Gd};
use godot::register::GodotClass;

/// Content delivery (downloadable assets). Reach it as `AeThexCloud.cdn`.
///
/// @experimental Not implemented yet.
#[derive(GodotClass)]
#[class(no_init, base = RefCounted)]
pub struct AeThexCdn {
    base: Base<RefCounted>,
}

impl AeThexCdn {
    pub fn create() -> Gd<Self> {
        Gd::from_init_fn(|base| Self { base })
    }
}
