//! `AeThexCloud.auth`: accounts and sessions.

use std::rc::Rc;

use godot::builtin::{GString, Signal, VarDictionary, Variant};
use godot::classes::RefCounted;
use godot::obj::{Base, Gd};
use godot::register::{godot_api, GodotClass};

use crate::convert;
use crate::hub::{optional, unsupported_argument, Hub};

/// Player accounts: email, device (anonymous) and OAuth sign-in, account linking, password
/// reset, profile. Reach it as `AeThexCloud.auth`.
///
/// Every method returning a [Signal] is asynchronous: `var r = await AeThexCloud.auth.login_email(email, password)`
/// gives an [AeThexResult]. Sign-in calls yield `{user: {id, username, email, avatar_url, ...}}`,
/// so `r.user.username` works. The refresh token is kept in the OS credential store (or an
/// encrypted file), so [method resume_session] signs the player back in after a restart.
#[derive(GodotClass)]
#[class(no_init, base = RefCounted)]
pub struct AeThexAuth {
    hub: Rc<Hub>,
    base: Base<RefCounted>,
}

#[godot_api]
impl AeThexAuth {
    /// A player signed in (any login, register, link or resumed session). `user` is the profile
    /// Dictionary, as [method get_current_user] returns it.
    #[signal]
    fn logged_in(user: VarDictionary);

    /// The player signed out through [method logout].
    #[signal]
    fn logged_out();

    /// The session ended without a logout (refresh token revoked or expired); sign in again.
    #[signal]
    fn session_expired();

    /// The profile changed through [method update_profile] or [method fetch_profile].
    #[signal]
    fn profile_updated(user: VarDictionary);

    /// Creates an account with email and password and signs it in. Result: `{user}`.
    #[func]
    fn register(&self, email: GString, password: GString, username: GString) -> Signal {
        self.hub.call(|c| {
            c.auth().register(
                email.to_string(),
                password.to_string(),
                username.to_string(),
            )
        })
    }

    /// Signs in with email and password. Result: `{user}`; fails with `invalid_credentials`.
    #[func]
    fn login_email(&self, email: GString, password: GString) -> Signal {
        self.hub.call(|c| {
            c.auth()
                .login_email(email.to_string(), password.to_string())
        })
    }

    /// Signs in anonymously as this device. Without `device_id`, a random id generated once and
    /// kept under `user://` is used, so the same device finds the same account. Result: `{user}`.
    #[func]
    fn login_device(&self, #[opt(default = "")] device_id: GString) -> Signal {
        let device_id = optional(&device_id);
        self.hub.call(|c| c.auth().login_device(device_id))
    }

    /// Signs in through an OAuth provider (e.g. `"google"`, `"github"`, `"discord"`): opens the
    /// system browser (PKCE) and waits for the redirect on a loopback port. Result: `{user}`.
    #[func]
    fn login_oauth(&self, provider: GString) -> Signal {
        self.hub
            .call(|c| c.auth().login_oauth(provider.to_string()))
    }

    /// Links a device id to the signed-in account (so an anonymous device and an email account
    /// become one). Empty `device_id` = this device's default id. Result: `{user}`.
    #[func]
    fn link_device(&self, #[opt(default = "")] device_id: GString) -> Signal {
        let device_id = optional(&device_id);
        self.hub.call(|c| c.auth().link_device(device_id))
    }

    /// Adds email + password sign-in to the signed-in account (e.g. upgrading a device account).
    /// Result: `{user}`.
    #[func]
    fn link_email(&self, email: GString, password: GString) -> Signal {
        self.hub
            .call(|c| c.auth().link_email(email.to_string(), password.to_string()))
    }

    /// Links an OAuth provider to the signed-in account (browser flow as [method login_oauth]).
    /// Result: `{user}`.
    #[func]
    fn link_oauth(&self, provider: GString) -> Signal {
        self.hub.call(|c| c.auth().link_oauth(provider.to_string()))
    }

    /// Asks the server to email a password reset token. Succeeds whether or not the address is
    /// known, so it reveals nothing. Result: `{}`.
    #[func]
    fn request_password_reset(&self, email: GString) -> Signal {
        self.hub
            .call(|c| c.auth().request_password_reset(email.to_string()))
    }

    /// Sets a new password with the token from the reset email. Result: `{}`.
    #[func]
    fn reset_password(&self, token: GString, new_password: GString) -> Signal {
        self.hub.call(|c| {
            c.auth()
                .reset_password(token.to_string(), new_password.to_string())
        })
    }

    /// Confirms the email address with the token from the verification email. Result: `{}`.
    #[func]
    fn verify_email(&self, token: GString) -> Signal {
        self.hub.call(|c| c.auth().verify_email(token.to_string()))
    }

    /// Reloads the signed-in player's profile from the server. Result: `{user}`.
    #[func]
    fn fetch_profile(&self) -> Signal {
        self.hub.call(|c| c.auth().fetch_profile())
    }

    /// Changes the profile. `changes` may hold `username`, `avatar_url` and `preferences`
    /// (a Dictionary). Result: `{user}`; emits [signal profile_updated].
    #[func]
    fn update_profile(&self, changes: VarDictionary) -> Signal {
        match convert::to_value(&Variant::from(changes), "changes") {
            Ok(changes) => self.hub.call(|c| c.auth().update_profile(changes)),
            Err(error) => self.hub.refuse(unsupported_argument(error)),
        }
    }

    /// Signs back in with the refresh token stored by an earlier session, without asking the
    /// player. Result: `{user}`; when the server is unreachable, `{user, offline: true}` (play
    /// and save offline as the stored user). Fails with `unauthorized` when there is no usable
    /// session.
    #[func]
    fn resume_session(&self) -> Signal {
        self.hub.call(|c| c.auth().resume_session())
    }

    /// Signs out: revokes the session on the server and forgets the stored token. Result: `{}`;
    /// emits [signal logged_out].
    #[func]
    fn logout(&self) -> Signal {
        self.hub.call(|c| c.auth().logout())
    }

    /// The signed-in player's profile (`id`, `username`, `email`, `avatar_url`, ...) from memory,
    /// or `null` when nobody is signed in. Synchronous.
    #[func]
    fn get_current_user(&self) -> Variant {
        self.hub
            .with_client(|c| c.auth().current_user())
            .flatten()
            .map(|user| convert::to_variant(&user))
            .unwrap_or_default()
    }

    /// Whether a player is signed in. Synchronous.
    #[func]
    fn is_logged_in(&self) -> bool {
        self.hub
            .with_client(|c| c.auth().is_logged_in())
            .unwrap_or(false)
    }
}

impl AeThexAuth {
    pub fn create(hub: Rc<Hub>) -> Gd<Self> {
        Gd::from_init_fn(|base| Self { hub, base })
    }
}
