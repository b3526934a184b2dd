//! `AeThexRequest` (what an async call hands out) and `AeThexResult` (what `await` yields).

use aethex_sdk::{SdkError, Value};
use godot::builtin::{GString, StringName, VarArray, VarDictionary, Variant, VariantType};
use godot::classes::{IRefCounted, RefCounted};
use godot::meta::ToGodot;
use godot::obj::{Base, Gd};
use godot::register::{godot_api, GodotClass};

use crate::convert::to_variant;

/// One asynchronous AeThex Cloud call in flight.
///
/// Every async method (`AeThexCloud.auth.login_email(...)`, `AeThexCloud.saves.save(...)`, ...)
/// returns this object's [signal completed] as a [Signal], so `var r = await <call>` yields an
/// [AeThexResult]. The binding keeps the request alive until it completes; `completed` is emitted
/// exactly once, on the main thread, during a later frame (never inside the call itself).
/// Await the Signal right away: a Signal only refers to its object, so one awaited after the
/// request completed never resumes.
#[derive(GodotClass)]
#[class(no_init, base = RefCounted)]
pub struct AeThexRequest {
    base: Base<RefCounted>,
}

#[godot_api]
impl AeThexRequest {
    /// Emitted once when the call finishes, successfully or not.
    #[signal]
    fn completed(result: Gd<AeThexResult>);
}

impl AeThexRequest {
    pub fn create() -> Gd<Self> {
        Gd::from_init_fn(|base| Self { base })
    }

    /// Emits `completed` with the outcome; called by the per-frame drain only.
    pub fn complete(this: Gd<Self>, outcome: Result<Value, SdkError>) {
        let result = AeThexResult::from_outcome(outcome);
        this.signals().completed().emit(&result);
    }
}

/// The outcome of an AeThex Cloud call.
///
/// - [member success] tells whether the call succeeded; on failure [member error] holds
///   `{code, message, status}` (plus `details` when the server sent some).
/// - Any key of the payload reads as a property: `result.user.username`, `loaded.version`.
/// - [member data] is the payload's `data` entry when it has one (loaded save data), otherwise
///   the whole payload.
/// - `for item in result:` iterates the payload's list (`saves`, `versions`, `entries`, ...):
///   the payload itself when it is an Array, otherwise its first Array-valued entry.
#[derive(GodotClass)]
#[class(no_init, base = RefCounted)]
pub struct AeThexResult {
    /// `true` when the call succeeded.
    #[var(no_set)]
    success: bool,
    /// Empty on success; otherwise `{code: String, message: String, status: int}` and, when the
    /// server sent them, `details`. `code` is one of the stable error codes listed in docs/sdk.md
    /// (`invalid_credentials`, `save_conflict`, `network`, `timeout`, ...).
    #[var(no_set)]
    error: VarDictionary,
    /// The payload's `data` entry when present (e.g. loaded save data), else the whole payload.
    #[var(no_set)]
    data: Variant,
    /// The whole result payload (a Dictionary for every call today). Empty on failure.
    #[var(no_set)]
    payload: Variant,
    /// The list this result iterates over (empty if the payload has none).
    #[var(no_set)]
    items: VarArray,
    base: Base<RefCounted>,
}

/// Property names of the class itself, never looked up in the payload.
const OWN_PROPERTIES: [&str; 5] = ["success", "error", "data", "payload", "items"];

#[godot_api]
impl IRefCounted for AeThexResult {
    fn on_get(&self, property: StringName) -> Option<Variant> {
        let name = property.to_string();
        if OWN_PROPERTIES.contains(&name.as_str())
            || self.payload.get_type() != VariantType::DICTIONARY
        {
            return None;
        }
        self.payload.to::<VarDictionary>().get(&name.to_variant())
    }

    fn to_string(&self) -> GString {
        if self.success {
            GString::from(format!("AeThexResult(success, {})", self.payload).as_str())
        } else {
            GString::from(format!("AeThexResult(error, {})", self.error).as_str())
        }
    }
}

#[godot_api]
impl AeThexResult {
    /// Number of items `for item in result` visits.
    #[func]
    fn size(&self) -> i64 {
        self.items.len() as i64
    }

    /// Iterator protocol: `iter[0]` holds the position.
    #[func(rename = _iter_init)]
    fn iter_init(&self, mut iter: VarArray) -> bool {
        iter.set(0, &0.to_variant());
        !self.items.is_empty()
    }

    #[func(rename = _iter_next)]
    fn iter_next(&self, mut iter: VarArray) -> bool {
        let next = iter.at(0).to::<i64>() + 1;
        iter.set(0, &next.to_variant());
        next < self.items.len() as i64
    }

    #[func(rename = _iter_get)]
    fn iter_get(&self, position: Variant) -> Variant {
        usize::try_from(position.to::<i64>())
            .ok()
            .and_then(|i| self.items.get(i))
            .unwrap_or_default()
    }
}

impl AeThexResult {
    pub fn from_outcome(outcome: Result<Value, SdkError>) -> Gd<Self> {
        let (success, error, payload) = match outcome {
            Ok(value) => (true, VarDictionary::new(), to_variant(&value)),
            Err(error) => (
                false,
                error_dictionary(&error),
                VarDictionary::new().to_variant(),
            ),
        };
        let (data, items) = shape(&payload);
        Gd::from_init_fn(|base| Self {
            success,
            error,
            data,
            payload,
            items,
            base,
        })
    }
}

/// `data` and the iterated list for a payload, as documented on the class.
fn shape(payload: &Variant) -> (Variant, VarArray) {
    match payload.get_type() {
        VariantType::ARRAY => (payload.clone(), payload.to()),
        VariantType::DICTIONARY => {
            let dict: VarDictionary = payload.to();
            let data = dict.get(&"data".to_variant()).unwrap_or(payload.clone());
            let items = dict
                .values_shared()
                .find(|v| v.get_type() == VariantType::ARRAY)
                .map(|v| v.to())
                .unwrap_or_default();
            (data, items)
        }
        _ => (payload.clone(), VarArray::new()),
    }
}

/// `{code, message, status[, details]}` as GDScript sees an error.
pub fn error_dictionary(error: &SdkError) -> VarDictionary {
    to_variant(&error.to_value()).to()
}
