//! `AeThexCloud.analytics`: opt-in events and metrics (a thin layer over `aethex_sdk::Analytics`).

use std::rc::Rc;

use godot::builtin::{GString, Signal, VarDictionary, Variant};
use godot::classes::RefCounted;
use godot::obj::{Base, Gd};
use godot::register::{godot_api, GodotClass};

use crate::convert;
use crate::hub::Hub;

/// Gameplay analytics. Reach it as `AeThexCloud.analytics`.
///
/// Opt-in: nothing is recorded or sent before [method set_consent] with `true`. The `track_*`
/// calls return at once (`false` when nothing was recorded); events are queued on disk under
/// `user://`, uploaded in compressed batches in the background, kept across crashes and offline
/// play, and stored once each by the server. Revoking consent deletes what is queued.
#[derive(GodotClass)]
#[class(no_init, base = RefCounted)]
pub struct AeThexAnalytics {
    hub: Rc<Hub>,
    base: Base<RefCounted>,
}

#[godot_api]
impl AeThexAnalytics {
    /// Grants (`true`) or revokes (`false`) the player's consent. `under_13` marks a child
    /// (COPPA): their events are stored without identifiers and user properties are dropped.
    /// Result: `{granted, under_13, synced}`; `synced` is false until the server has it (it is
    /// sent before the next upload).
    #[func]
    fn set_consent(&self, granted: bool, #[opt(default = false)] under_13: bool) -> Signal {
        self.hub
            .call(|c| c.analytics().set_consent(granted, under_13))
    }

    /// Whether events are recorded now.
    #[func]
    fn has_consent(&self) -> bool {
        self.hub
            .with_client(|c| c.analytics().has_consent())
            .unwrap_or(false)
    }

    /// Records `name` with `properties` (numbers, strings, bools, arrays, dictionaries, vectors).
    #[func]
    fn track_event(&self, name: GString, properties: VarDictionary) -> bool {
        let properties = match convert::to_value(&Variant::from(properties), "properties") {
            Ok(properties) => properties,
            Err(error) => {
                godot::global::godot_error!("AeThexCloud.analytics: {}", error);
                return false;
            }
        };
        self.hub
            .with_client(|c| c.analytics().track_event(&name.to_string(), properties))
            .unwrap_or(false)
    }

    /// Records a number, e.g. `track_metric("fps", Engine.get_frames_per_second())`.
    #[func]
    fn track_metric(&self, name: GString, value: f64) -> bool {
        self.hub
            .with_client(|c| c.analytics().track_metric(&name.to_string(), value))
            .unwrap_or(false)
    }

    /// Records that the player opened the screen `name`.
    #[func]
    fn track_screen(&self, name: GString) -> bool {
        self.hub
            .with_client(|c| c.analytics().track_screen(&name.to_string()))
            .unwrap_or(false)
    }

    /// Sets a property of the player (e.g. `vip_status`); the server keeps the latest value.
    #[func]
    fn set_user_property(&self, name: GString, value: Variant) -> bool {
        let value = match convert::to_value(&value, "value") {
            Ok(value) => value,
            Err(error) => {
                godot::global::godot_error!("AeThexCloud.analytics: {}", error);
                return false;
            }
        };
        self.hub
            .with_client(|c| c.analytics().set_user_property(&name.to_string(), value))
            .unwrap_or(false)
    }

    /// This player's variant (a String) of a running experiment, or `null` when the player is
    /// not in it or assignments were not fetched yet. Answers from the copy fetched at sign-in
    /// (and refreshed in the background); the first call per experiment records an exposure.
    #[func]
    fn get_variant(&self, experiment: GString) -> Variant {
        self.hub
            .with_client(|c| c.analytics().get_variant(&experiment.to_string()))
            .flatten()
            .map_or_else(Variant::nil, |variant| {
                Variant::from(GString::from(variant.as_str()))
            })
    }

    /// A remote config value from the cached copy, or `default` when the key is unknown (or
    /// not fetched yet).
    #[func]
    fn get_config(&self, key: GString, default: Variant) -> Variant {
        let fallback = match convert::to_value(&default, "default") {
            Ok(value) => value,
            Err(error) => {
                godot::global::godot_error!("AeThexCloud.analytics: {}", error);
                return default;
            }
        };
        self.hub
            .with_client(|c| {
                convert::to_variant(&c.analytics().get_config(&key.to_string(), fallback))
            })
            .unwrap_or(default)
    }

    /// Uploads what is queued now. Result: `{uploaded, queued}`.
    #[func]
    fn flush(&self) -> Signal {
        self.hub.call(|c| c.analytics().flush())
    }

    /// Events waiting on disk for upload.
    #[func]
    fn get_queued_events(&self) -> i64 {
        self.hub
            .with_client(|c| c.analytics().queued_events() as i64)
            .unwrap_or(0)
    }

    /// Events dropped since the game started because the queue was full (long offline play).
    #[func]
    fn get_dropped_events(&self) -> i64 {
        self.hub
            .with_client(|c| c.analytics().dropped_events() as i64)
            .unwrap_or(0)
    }
}

impl AeThexAnalytics {
    pub fn create(hub: Rc<Hub>) -> Gd<Self> {
        Gd::from_init_fn(|base| Self { hub, base })
    }
}
