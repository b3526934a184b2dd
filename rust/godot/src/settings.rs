//! ProjectSettings under `aethex_cloud/`: registered with defaults and editor hints at extension
//! load, read into a [`ClientConfig`] when the SDK client is created.

use std::time::Duration;

use godot::builtin::{GString, VarDictionary, Variant, VariantType};
use godot::classes::{Engine, Os, ProjectSettings};
use godot::global::godot_warn;
use godot::meta::ToGodot;
use godot::obj::{EngineEnum, Singleton};
use godot::register::info::PropertyHint;

use crate::sdk::{ClientConfig, ConflictStrategy, CredentialStore};

pub const API_URL: &str = "aethex_cloud/api_url";
pub const CLIENT_KEY: &str = "aethex_cloud/client_key";
pub const CONFLICT_STRATEGY: &str = "aethex_cloud/conflict_strategy";
pub const AUTO_SYNC_INTERVAL: &str = "aethex_cloud/auto_sync_interval";

const DEFAULT_API_URL: &str = "http://127.0.0.1:8080";
const DEFAULT_CONFLICT_STRATEGY: &str = "newest_wins";
const DEFAULT_AUTO_SYNC_SECONDS: f64 = 30.0;

/// The game keeps its session and save cache here; the editor (the dock's developer login) uses
/// its own folder and keyring service so it never replaces the player session of the game being
/// developed.
const GAME_DATA_DIR: &str = "user://aethex_cloud";
const EDITOR_DATA_DIR: &str = "user://aethex_cloud_editor";
const EDITOR_KEYRING_SERVICE: &str = "aethex-cloud-editor";

/// Adds the settings (if missing) with their defaults and hints so they show in Project Settings.
pub fn register() {
    register_one(
        API_URL,
        DEFAULT_API_URL.to_variant(),
        VariantType::STRING,
        PropertyHint::PLACEHOLDER_TEXT,
        DEFAULT_API_URL,
    );
    register_one(
        CLIENT_KEY,
        "".to_variant(),
        VariantType::STRING,
        PropertyHint::PLACEHOLDER_TEXT,
        "client key of the project (the server prints it on first start)",
    );
    register_one(
        CONFLICT_STRATEGY,
        DEFAULT_CONFLICT_STRATEGY.to_variant(),
        VariantType::STRING,
        PropertyHint::ENUM,
        "newest_wins,server_wins,client_wins,manual",
    );
    register_one(
        AUTO_SYNC_INTERVAL,
        DEFAULT_AUTO_SYNC_SECONDS.to_variant(),
        VariantType::FLOAT,
        PropertyHint::RANGE,
        "1,3600,0.5,or_greater,suffix:s",
    );
}

fn register_one(
    name: &str,
    default: Variant,
    kind: VariantType,
    hint: PropertyHint,
    hint_string: &str,
) {
    let mut settings = ProjectSettings::singleton();
    if !settings.has_setting(name) {
        settings.set_setting(name, &default);
    }
    // The initial value makes a setting equal to its default stay out of project.godot.
    settings.set_initial_value(name, &default);
    settings.set_as_basic(name, true);
    let mut info = VarDictionary::new();
    info.set("name", name);
    info.set("type", kind.ord());
    info.set("hint", hint.ord());
    info.set("hint_string", hint_string);
    settings.add_property_info(&info);
}

/// The SDK configuration from the current ProjectSettings.
pub fn client_config() -> ClientConfig {
    let settings = ProjectSettings::singleton();
    let text = |name: &str| {
        settings
            .get_setting(name)
            .try_to::<GString>()
            .unwrap_or_default()
            .to_string()
    };

    let in_editor = Engine::singleton().is_editor_hint();
    let data_dir = if in_editor {
        EDITOR_DATA_DIR
    } else {
        GAME_DATA_DIR
    };
    let mut config = ClientConfig::new(
        text(API_URL),
        text(CLIENT_KEY),
        settings.globalize_path(data_dir).to_string(),
    );
    if in_editor {
        config.credential_store = CredentialStore::Keyring {
            service: EDITOR_KEYRING_SERVICE.to_owned(),
        };
    }

    let strategy = text(CONFLICT_STRATEGY);
    match strategy.parse::<ConflictStrategy>() {
        Ok(parsed) => config.conflict_strategy = parsed,
        Err(_) => godot_warn!(
            "AeThexCloud: unknown {CONFLICT_STRATEGY} \"{strategy}\", using {DEFAULT_CONFLICT_STRATEGY}"
        ),
    }

    let seconds = settings
        .get_setting(AUTO_SYNC_INTERVAL)
        .try_to_relaxed::<f64>()
        .unwrap_or(DEFAULT_AUTO_SYNC_SECONDS);
    if seconds.is_finite() && seconds > 0.0 {
        config.auto_sync_interval = Duration::from_secs_f64(seconds);
    }

    // Experiment targeting: the platform as Godot names it (lowercase) and the game's version.
    config.analytics.platform = Some(Os::singleton().get_name().to_string().to_lowercase());
    let version = text("application/config/version");
    config.analytics.build = (!version.is_empty()).then_some(version);
    config
}
