//! `AeThexCloud.saves`: cloud saves with a local cache, offline queue and conflict handling.

use std::rc::Rc;

use godot::builtin::{GString, Signal, VarDictionary, Variant};
use godot::classes::RefCounted;
use godot::obj::{Base, Gd};
use godot::register::{godot_api, GodotClass};

use crate::convert;
use crate::hub::{unsupported_argument, Hub};

/// Cloud save slots. Reach it as `AeThexCloud.saves`.
///
/// Save data is any Variant made of Godot value types (Dictionary, Array, numbers, strings,
/// Vector2/3/4 and their integer forms, Rect2, Transform2D/3D, Basis, Quaternion, Color,
/// StringName, NodePath, packed arrays...): it comes back from [method load] with the same types.
/// Objects (nodes, resources) cannot be saved; passing one fails with `invalid_request`.
///
/// A save is written to a local cache under `user://` first and uploaded in the background, so it
/// survives being offline or a crash. When another device wrote the slot meanwhile, the
/// `aethex_cloud/conflict_strategy` project setting decides; with `manual`,
/// [signal conflict_detected] fires and the slot waits for [method resolve_conflict].
#[derive(GodotClass)]
#[class(no_init, base = RefCounted)]
pub struct AeThexSaves {
    hub: Rc<Hub>,
    base: Base<RefCounted>,
}

#[godot_api]
impl AeThexSaves {
    /// A save reached the server. `info` is `{slot, version, size, updated_at, checksum, metadata}`.
    #[signal]
    fn save_completed(slot: GString, info: VarDictionary);

    /// A slot was loaded; `data` is the saved value with its Godot types restored.
    #[signal]
    fn load_completed(slot: GString, data: Variant);

    /// A save could not be uploaded and will not be retried (e.g. `quota_exceeded`). `error` is
    /// `{code, message, status}`. Network failures are retried instead.
    #[signal]
    fn save_failed(slot: GString, error: VarDictionary);

    /// Background sync changed state: `"idle"`, `"syncing"`, `"offline"`, `"error"` or `"disabled"`.
    #[signal]
    fn sync_status_changed(status: GString);

    /// With the `manual` conflict strategy: the server holds a newer version of `slot` than the
    /// one this save was based on. `local` is this device's data, `remote` the server's. Answer
    /// with [method resolve_conflict]; both versions stay in the slot's history.
    #[signal]
    fn conflict_detected(slot: GString, local: Variant, remote: Variant);

    /// A conflict was settled. `info` holds `strategy` and the new `version`; settled by a
    /// strategy it also has `winner` (`"local"` or `"server"`) and `local_version` (where the
    /// local data is kept in history); settled by [method resolve_conflict] it is the save info.
    #[signal]
    fn conflict_resolved(slot: GString, info: VarDictionary);

    /// Saves `data` in `slot` (local cache first, then upload). Result:
    /// `{slot, version, size, updated_at, checksum, metadata, queued}`. With auto-sync on, an
    /// upload that cannot reach the server completes with `queued: true` and happens later; with
    /// auto-sync off it fails (and emits [signal save_failed]) while the write stays queued for
    /// [method sync_now]. Emits [signal save_completed] once uploaded.
    #[func]
    fn save(&self, slot: GString, data: Variant) -> Signal {
        self.start_save(slot, data, None)
    }

    /// As [method save], with a `metadata` Dictionary shown by [method list] and
    /// [method history] without loading the data (e.g. level, play time, a thumbnail path).
    #[func]
    fn save_with_metadata(&self, slot: GString, data: Variant, metadata: VarDictionary) -> Signal {
        self.start_save(slot, data, Some(Variant::from(metadata)))
    }

    /// Loads `slot`. Result: `{slot, data, version, updated_at, metadata, from_cache}`; `r.data`
    /// is the saved value (`loaded.data.position` is a Vector3 again). A local write not yet
    /// uploaded wins and, like the cached copy used offline, comes with `from_cache: true`;
    /// `version` is `null` for a slot never uploaded. Emits [signal load_completed].
    #[func]
    fn load(&self, slot: GString) -> Signal {
        self.hub.call(|c| c.saves().load(slot.to_string()))
    }

    /// Lists the player's slots. Result: `{saves: [{name, version, size, timestamp, checksum,
    /// metadata}], used_bytes, quota_bytes}`; `for s in await AeThexCloud.saves.list()` iterates
    /// the slots.
    #[func]
    fn list(&self) -> Signal {
        self.hub.call(|c| c.saves().list())
    }

    /// Deletes `slot` (its history stays restorable on the server). Result: `{}`.
    #[func]
    fn delete(&self, slot: GString) -> Signal {
        self.hub.call(|c| c.saves().delete(slot.to_string()))
    }

    /// Past versions of `slot` (every slot when empty), newest first. Result: `{versions:
    /// [{slot, version, size, created_at, checksum, metadata, kind}]}`; iterating the result
    /// visits the versions.
    #[func]
    fn history(&self, #[opt(default = "")] slot: GString) -> Signal {
        let slot = (!slot.is_empty()).then(|| slot.to_string());
        self.hub.call(|c| c.saves().history(slot))
    }

    /// Makes `version` of `slot` current again (as a new version; nothing is lost). Result as
    /// [method save].
    #[func]
    fn restore(&self, slot: GString, version: i64) -> Signal {
        self.hub
            .call(|c| c.saves().restore(slot.to_string(), version))
    }

    /// Answers [signal conflict_detected]: `data` becomes the slot's new version (pass `local`,
    /// `remote` or a merge of both). Result as [method save]; emits [signal conflict_resolved].
    #[func]
    fn resolve_conflict(&self, slot: GString, data: Variant) -> Signal {
        match convert::to_value(&data, "data") {
            Ok(data) => self
                .hub
                .call(|c| c.saves().resolve_conflict(slot.to_string(), data)),
            Err(error) => self.hub.refuse(unsupported_argument(error)),
        }
    }

    /// Uploads everything queued locally now instead of waiting for the next auto-sync tick.
    /// Result: `{uploaded, pending}`; fails with the error that stopped the upload.
    #[func]
    fn sync_now(&self) -> Signal {
        self.hub.call(|c| c.saves().sync_now())
    }

    /// Turns background sync on or off: queued saves upload in the background, retried every
    /// `aethex_cloud/auto_sync_interval` seconds while the server is unreachable. Synchronous;
    /// progress is reported by [signal sync_status_changed].
    #[func]
    fn enable_auto_sync(&self, #[opt(default = true)] enabled: bool) {
        self.hub
            .with_client(|c| c.saves().enable_auto_sync(enabled));
    }

    /// The current sync state: `"idle"`, `"syncing"`, `"offline"`, `"error"` or `"disabled"`.
    #[func]
    fn get_sync_status(&self) -> GString {
        self.hub
            .with_client(|c| c.saves().sync_status())
            .map(|status| GString::from(status.as_str()))
            .unwrap_or_else(|| GString::from("error"))
    }
}

impl AeThexSaves {
    fn start_save(&self, slot: GString, data: Variant, metadata: Option<Variant>) -> Signal {
        let data = match convert::to_value(&data, "data") {
            Ok(data) => data,
            Err(error) => return self.hub.refuse(unsupported_argument(error)),
        };
        let metadata = match metadata
            .map(|m| convert::to_value(&m, "metadata"))
            .transpose()
        {
            Ok(metadata) => metadata,
            Err(error) => return self.hub.refuse(unsupported_argument(error)),
        };
        self.hub
            .call(|c| c.saves().save(slot.to_string(), data, metadata))
    }

    pub fn create(hub: Rc<Hub>) -> Gd<Self> {
        Gd::from_init_fn(|base| Self { hub, base })
    }
}
