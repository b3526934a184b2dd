//! The AeThexCloud GDExtension: registers the `AeThexCloud` engine singleton and its service
//! objects, converts Variant <-> [`aethex_sdk::Value`], and turns SDK events into Godot signals
//! once per frame on the main thread. All client logic lives in the SDK core (`aethex-sdk`).

mod analytics;
mod auth;
mod chat;
mod cloud;
mod convert;
mod hub;
mod log_bridge;
mod multiplayer;
mod peer;
mod result;
mod saves;
mod services;
mod settings;
mod social;
mod voice;

use aethex_sdk as sdk;

use godot::init::{gdextension, EditorRunBehavior, ExtensionLibrary, InitStage};

struct AeThexExtension;

// SAFETY: the one ExtensionLibrary of this crate; gdext's entry point `gdext_rust_init`.
#[gdextension]
unsafe impl ExtensionLibrary for AeThexExtension {
    /// The editor dock signs in through the singleton, so its classes must be real (not the
    /// editor placeholders gdext registers non-tool classes as). None has lifecycle callbacks.
    fn editor_run_behavior() -> EditorRunBehavior {
        EditorRunBehavior::AllClasses
    }

    fn on_stage_init(stage: InitStage) {
        // Scene is the earliest stage where GDScript's parser will see an engine singleton.
        if stage == InitStage::Scene {
            log_bridge::install();
            settings::register();
            cloud::AeThexCloud::register();
        }
    }

    fn on_stage_deinit(stage: InitStage) {
        if stage == InitStage::Scene {
            cloud::AeThexCloud::unregister();
        }
    }
}
