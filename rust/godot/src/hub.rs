//! The binding's main-thread state shared by the singleton and its service objects: the SDK
//! client (created on first use from ProjectSettings), the requests in flight, and the per-frame
//! drain that turns SDK events into Godot signals.
//!
//! The drain is a Callable connected to `SceneTree.process_frame` the first time a call is made
//! while a SceneTree exists (a game's or the editor's), so it runs once per frame on the main
//! thread. SDK background threads only ever push onto the SDK's queue; no Godot API is touched
//! off the main thread.
//!
//! No RefCell borrow is held while a signal is emitted: handlers may call back into the binding.
//!
//! When the root Window leaves the tree (SceneTree finalize at exit, before nodes and scripts are
//! freed) every connection to the service objects' signals is disconnected: Godot 4.3 crashes at
//! exit when a GDScript lambda is still connected to an engine singleton's signal once the
//! script side is gone (the connection is torn down after GDScript at extension deinit).

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::{Rc, Weak};

use aethex_protocol::ErrorCode;
use godot::builtin::{Callable, GString, Signal, StringName, Variant};
use godot::classes::{Engine, Object, SceneTree};
use godot::global::{godot_error, godot_warn};
use godot::obj::{Gd, Singleton};

use crate::convert::{self, Unsupported};
use crate::result::AeThexRequest;
use crate::sdk::{Client, Event, RequestId, SdkError, Value};
use crate::{log_bridge, settings};

/// Upper bound on events handled per frame, so a burst cannot stall one frame.
const MAX_EVENTS_PER_FRAME: usize = 1024;

/// How long `reconfigure()` and deinit wait for the SDK's threads (they end within milliseconds
/// unless a blocking call, e.g. a credential store prompt, is in progress).
const SHUTDOWN_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

#[derive(Default)]
pub struct Hub {
    client: RefCell<Option<Client>>,
    pending: RefCell<HashMap<RequestId, Gd<AeThexRequest>>>,
    /// Calls refused by the binding itself (bad argument, no client); completed next frame so
    /// completion is never synchronous.
    refused: RefCell<Vec<(Gd<AeThexRequest>, SdkError)>>,
    /// Where `Event::Signal { service, .. }` is emitted, e.g. "auth", "social.leaderboards".
    services: RefCell<Vec<(&'static str, Gd<Object>)>>,
    /// The drain Callable once connected to `SceneTree.process_frame`.
    frame_hook: RefCell<Option<Callable>>,
    /// The Callable connected to the root Window's `tree_exiting` (see the module docs).
    exit_hook: RefCell<Option<Callable>>,
    /// Reused between frames to avoid an allocation per drain.
    events: RefCell<Vec<Event>>,
    /// Work run once per frame after the events, with the client (voice audio).
    frame_tasks: RefCell<Vec<FrameTask>>,
}

/// See [`Hub::on_frame`].
pub type FrameTask = Box<dyn FnMut(&Client)>;

impl Hub {
    pub fn new() -> Rc<Hub> {
        Rc::new(Hub::default())
    }

    /// Runs `task` once per frame, after the events, while a client exists.
    pub fn on_frame(&self, task: FrameTask) {
        self.frame_tasks.borrow_mut().push(task);
    }

    pub fn add_service(&self, name: &'static str, object: Gd<Object>) {
        self.services.borrow_mut().push((name, object));
    }

    /// Starts an SDK call and returns the Signal the caller awaits.
    pub fn call(self: &Rc<Self>, start: impl FnOnce(&Client) -> RequestId) -> Signal {
        self.hook_frame();
        if let Err(error) = self.ensure_client() {
            return self.refuse(*error);
        }
        let request = {
            let client = self.client.borrow();
            start(client.as_ref().expect("client was just created"))
        };
        let handle = AeThexRequest::create();
        let signal = Signal::from_object_signal(&handle, "completed");
        self.pending.borrow_mut().insert(request, handle);
        signal
    }

    /// Returns a Signal that completes next frame with `error`, for calls the binding rejects.
    pub fn refuse(self: &Rc<Self>, error: SdkError) -> Signal {
        self.hook_frame();
        let handle = AeThexRequest::create();
        let signal = Signal::from_object_signal(&handle, "completed");
        self.refused.borrow_mut().push((handle, error));
        signal
    }

    /// Runs a synchronous SDK accessor; `None` when no client can be created.
    pub fn with_client<R>(self: &Rc<Self>, read: impl FnOnce(&Client) -> R) -> Option<R> {
        self.hook_frame();
        if let Err(error) = self.ensure_client() {
            godot_error!("AeThexCloud: {}", error.message);
            return None;
        }
        self.client.borrow().as_ref().map(read)
    }

    /// Drops the client so the next call builds a new one from the current ProjectSettings.
    /// Calls still in flight complete with `unavailable`. Waits for the old client's threads as
    /// deinit does: a thread still running when Godot unloads the library crashes the exit.
    pub fn reconfigure(&self) {
        let old = self.client.borrow_mut().take();
        if let Some(client) = old {
            client.shutdown_and_wait(SHUTDOWN_WAIT);
        }
        let orphaned: Vec<_> = self.pending.borrow_mut().drain().map(|(_, h)| h).collect();
        let mut refused = self.refused.borrow_mut();
        for handle in orphaned {
            refused.push((
                handle,
                binding_error(
                    ErrorCode::Unavailable,
                    "AeThexCloud was reconfigured while this call was running",
                ),
            ));
        }
    }

    /// Stops the SDK and drops every Godot object held; called at extension deinit. Waits
    /// briefly for the SDK's threads so none runs while Godot unloads the library.
    pub fn shutdown(&self) {
        let old = self.client.borrow_mut().take();
        if let Some(client) = old {
            client.shutdown_and_wait(SHUTDOWN_WAIT);
        }
        self.pending.borrow_mut().clear();
        self.refused.borrow_mut().clear();
        self.services.borrow_mut().clear();
        self.frame_tasks.borrow_mut().clear();
        // The tree must not keep a Callable whose code is about to be unloaded.
        if let Some(drain) = self.frame_hook.borrow_mut().take() {
            if let Some(mut tree) = scene_tree() {
                if tree.is_connected("process_frame", &drain) {
                    tree.disconnect("process_frame", &drain);
                }
            }
        }
        if let Some(release) = self.exit_hook.borrow_mut().take() {
            if let Some(mut root) = scene_tree().and_then(|tree| tree.get_root()) {
                if root.is_connected("tree_exiting", &release) {
                    root.disconnect("tree_exiting", &release);
                }
            }
        }
    }

    /// Disconnects every connection to every signal of the service objects and of the requests
    /// still in flight (see the module docs).
    fn release_connections(&self) {
        let mut objects: Vec<Gd<Object>> = self
            .services
            .borrow()
            .iter()
            .map(|(_, object)| object.clone())
            .collect();
        objects.extend(self.pending.borrow().values().map(|h| h.clone().upcast()));
        objects.extend(
            self.refused
                .borrow()
                .iter()
                .map(|(h, _)| h.clone().upcast()),
        );
        for mut object in objects {
            for signal in object.get_signal_list().iter_shared() {
                let Some(name) = signal.get("name").map(|n| n.to::<StringName>()) else {
                    continue;
                };
                for connection in object.get_signal_connection_list(&name).iter_shared() {
                    if let Some(callable) = connection.get("callable") {
                        object.disconnect(&name, &callable.to::<Callable>());
                    }
                }
            }
        }
    }

    fn ensure_client(&self) -> Result<(), Box<SdkError>> {
        if self.client.borrow().is_some() {
            return Ok(());
        }
        let client = Client::new(settings::client_config())?;
        *self.client.borrow_mut() = Some(client);
        Ok(())
    }

    /// Connects the per-frame drain and the exit-time disconnect, once a SceneTree exists.
    pub fn hook_frame(self: &Rc<Self>) {
        if self.frame_hook.borrow().is_some() {
            return;
        }
        // No SceneTree yet (a call during engine start-up): the next call tries again.
        let Some(mut tree) = scene_tree() else {
            return;
        };
        let hub: Weak<Hub> = Rc::downgrade(self);
        let drain = Callable::from_fn("AeThexCloud.drain_events", move |_args: &[&Variant]| {
            if let Some(hub) = hub.upgrade() {
                hub.drain();
            }
        });
        tree.connect("process_frame", &drain);
        *self.frame_hook.borrow_mut() = Some(drain);

        if let Some(mut root) = tree.get_root() {
            let hub: Weak<Hub> = Rc::downgrade(self);
            let release = Callable::from_fn(
                "AeThexCloud.release_connections",
                move |_args: &[&Variant]| {
                    if let Some(hub) = hub.upgrade() {
                        hub.release_connections();
                    }
                },
            );
            root.connect("tree_exiting", &release);
            *self.exit_hook.borrow_mut() = Some(release);
        }
    }

    /// Delivers everything queued since the last frame: refused calls, then SDK events in order.
    fn drain(&self) {
        for line in log_bridge::take() {
            if line.is_error {
                godot_error!("{}", line.text);
            } else {
                godot_warn!("{}", line.text);
            }
        }
        let mut events = std::mem::take(&mut *self.events.borrow_mut());
        if let Some(client) = self.client.borrow().as_ref() {
            client.drain_events(&mut events, MAX_EVENTS_PER_FRAME);
        }
        let refused = std::mem::take(&mut *self.refused.borrow_mut());
        for (handle, error) in refused {
            AeThexRequest::complete(handle, Err(error));
        }
        for event in events.drain(..) {
            match event {
                Event::Completed { request, outcome } => {
                    let handle = self.pending.borrow_mut().remove(&request);
                    if let Some(handle) = handle {
                        AeThexRequest::complete(handle, outcome);
                    }
                }
                Event::Signal {
                    service,
                    name,
                    args,
                } => self.emit(service, name, &args),
            }
        }
        *self.events.borrow_mut() = events;
        if let Some(client) = self.client.borrow().as_ref() {
            for task in self.frame_tasks.borrow_mut().iter_mut() {
                task(client);
            }
        }
    }

    fn emit(&self, service: &str, signal: &str, args: &[Value]) {
        let target = self
            .services
            .borrow()
            .iter()
            .find(|(name, _)| *name == service)
            .map(|(_, object)| object.clone());
        let Some(mut target) = target else {
            godot_warn!("AeThexCloud: signal {signal} for unknown service {service}");
            return;
        };
        let args: Vec<Variant> = args.iter().map(convert::to_variant).collect();
        target.emit_signal(signal, &args);
    }
}

fn scene_tree() -> Option<Gd<SceneTree>> {
    let main_loop = Engine::singleton().get_main_loop()?;
    match main_loop.try_cast::<SceneTree>() {
        Ok(tree) => Some(tree),
        Err(_) => {
            godot_warn!(
                "AeThexCloud: the main loop is not a SceneTree; results cannot be delivered"
            );
            None
        }
    }
}

/// An error raised by the binding before the SDK is involved.
pub fn binding_error(code: ErrorCode, message: impl Into<String>) -> SdkError {
    SdkError {
        code,
        message: message.into(),
        status: 0,
        details: None,
    }
}

/// The `invalid_request` error for an argument that has no portable form.
pub fn unsupported_argument(error: Unsupported) -> SdkError {
    binding_error(ErrorCode::InvalidRequest, error.to_string())
}

/// `None` for the empty string GDScript passes for "not given".
pub fn optional(text: &GString) -> Option<String> {
    (!text.is_empty()).then(|| text.to_string())
}

/// Converts a Variant argument and starts the call, or refuses it next frame with
/// `invalid_request` naming the element that has no portable form.
pub fn call_with(
    hub: &Rc<Hub>,
    argument: &Variant,
    name: &str,
    start: impl FnOnce(&Client, Value) -> RequestId,
) -> Signal {
    match convert::to_value(argument, name) {
        Ok(value) => hub.call(|c| start(c, value)),
        Err(error) => hub.refuse(unsupported_argument(error)),
    }
}

/// A page size from GDScript's int; 0 means the server's default.
pub fn page_limit(hub: &Rc<Hub>, limit: i64) -> Result<Option<u32>, Signal> {
    match u32::try_from(limit) {
        Ok(0) => Ok(None),
        Ok(limit) => Ok(Some(limit)),
        Err(_) => Err(hub.refuse(binding_error(
            ErrorCode::InvalidRequest,
            format!("limit must be between 0 and {}, got {limit}", u32::MAX),
        ))),
    }
}
