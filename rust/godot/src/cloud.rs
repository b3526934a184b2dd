//! The `AeThexCloud` engine singleton: the entry point GDScript sees.

use std::rc::Rc;

use godot::builtin::GString;
use godot::classes::{Engine, Object};
use godot::obj::{Base, Gd, GodotClass as _, Inherits, Singleton, UserSingleton};
use godot::register::{godot_api, GodotClass};

use crate::analytics::AeThexAnalytics;
use crate::auth::AeThexAuth;
use crate::hub::Hub;
use crate::multiplayer::AeThexMultiplayer;
use crate::saves::AeThexSaves;
use crate::services::AeThexCdn;
use crate::social::AeThexSocial;
use crate::voice::AeThexVoice;

/// AeThex Cloud: accounts, cloud saves, multiplayer, social features, analytics and (soon)
/// content delivery for your game.
///
/// Every service is a property of this singleton: `AeThexCloud.auth`, `AeThexCloud.saves`, ...
/// Asynchronous methods return a [Signal]; `await` it to get an [AeThexResult]:
/// ```gdscript
/// var result = await AeThexCloud.auth.login_email("user@example.com", "password")
/// if result.success:
///     print("Logged in as: ", result.user.username)
/// else:
///     print(result.error.code, ": ", result.error.message)
/// ```
/// Configure the server in Project Settings under `aethex_cloud/` (`api_url`, `client_key`,
/// `conflict_strategy`, `auto_sync_interval`). The SDK client starts on the first call;
/// results and signals are delivered once per frame on the main thread.
#[derive(GodotClass)]
#[class(no_init, base = Object)]
pub struct AeThexCloud {
    /// Accounts and sessions ([AeThexAuth]).
    #[var(get = get_auth, no_set)]
    auth: Gd<AeThexAuth>,
    /// Cloud saves ([AeThexSaves]).
    #[var(get = get_saves, no_set)]
    saves: Gd<AeThexSaves>,
    /// Multiplayer: rooms, state relay, matchmaking and Godot's high-level multiplayer
    /// ([AeThexMultiplayer]).
    #[var(get = get_multiplayer, no_set)]
    multiplayer: Gd<AeThexMultiplayer>,
    /// Analytics ([AeThexAnalytics]).
    #[var(get = get_analytics, no_set)]
    analytics: Gd<AeThexAnalytics>,
    /// Content delivery ([AeThexCdn]).
    #[var(get = get_cdn, no_set)]
    cdn: Gd<AeThexCdn>,
    /// Leaderboards, achievements, statistics, friends, presence, groups and chat
    /// ([AeThexSocial]).
    #[var(get = get_social, no_set)]
    social: Gd<AeThexSocial>,
    hub: Rc<Hub>,
    base: Base<Object>,
}

impl UserSingleton for AeThexCloud {}

#[godot_api]
impl AeThexCloud {
    /// Restarts the SDK client with the current `aethex_cloud/*` project settings (e.g. after
    /// changing the server URL at runtime). Calls still running complete with `unavailable`.
    /// Blocks until the old client's threads have ended (at most 2 s). Each server keeps its own
    /// stored session, so switching back lets `auth.resume_session()` sign in again.
    #[func]
    fn reconfigure(&self) {
        self.hub.reconfigure();
    }

    /// The version of the AeThex Cloud extension.
    #[func]
    fn get_version(&self) -> GString {
        GString::from(crate::sdk::VERSION)
    }

    // Custom getters of the service properties: see `service_accessed`.
    #[func]
    fn get_auth(&self) -> Gd<AeThexAuth> {
        self.service_accessed();
        self.auth.clone()
    }

    #[func]
    fn get_saves(&self) -> Gd<AeThexSaves> {
        self.service_accessed();
        self.saves.clone()
    }

    #[func]
    fn get_multiplayer(&self) -> Gd<AeThexMultiplayer> {
        self.service_accessed();
        self.multiplayer.clone()
    }

    #[func]
    fn get_analytics(&self) -> Gd<AeThexAnalytics> {
        self.service_accessed();
        self.analytics.clone()
    }

    #[func]
    fn get_cdn(&self) -> Gd<AeThexCdn> {
        self.service_accessed();
        self.cdn.clone()
    }

    #[func]
    fn get_social(&self) -> Gd<AeThexSocial> {
        self.service_accessed();
        self.social.clone()
    }
}

impl AeThexCloud {
    /// A script reaching a service may connect to its signals without making a call; the hub's
    /// exit-time disconnect must be in place before that (see hub.rs).
    fn service_accessed(&self) {
        self.hub.hook_frame();
    }

    /// Builds the singleton and its service objects; registered by the extension at Scene init.
    pub fn register() {
        let hub = Hub::new();
        let auth = AeThexAuth::create(hub.clone());
        let saves = AeThexSaves::create(hub.clone());
        let voice = AeThexVoice::create(hub.clone());
        let multiplayer = AeThexMultiplayer::create(hub.clone(), voice.clone());
        let analytics = AeThexAnalytics::create(hub.clone());
        let cdn = AeThexCdn::create();
        let social = AeThexSocial::create(&hub);

        hub.add_service("auth", auth.clone().upcast());
        hub.add_service("saves", saves.clone().upcast());
        hub.add_service("multiplayer.voice", voice.upcast());
        hub.add_service("analytics", analytics.clone().upcast());
        hub.add_service("cdn", cdn.clone().upcast());

        let singleton = Gd::from_init_fn(|base| Self {
            auth,
            saves,
            multiplayer,
            analytics,
            cdn,
            social,
            hub,
            base,
        });
        Engine::singleton().register_singleton(&Self::class_id().to_string_name(), &singleton);
    }

    /// Stops the SDK, unregisters and frees the singleton; at Scene deinit.
    pub fn unregister() {
        let singleton = Self::singleton();
        singleton.bind().hub.shutdown();
        Engine::singleton().unregister_singleton(&Self::class_id().to_string_name());
        singleton.free();
    }
}

/// Compile-time check that the singleton is a manually managed Object, as engine singletons must be.
const _: fn() = || {
    fn is_object<T: Inherits<Object>>() {}
    is_object::<AeThexCloud>();
};
