//! A built VM: runs its vCPUs and the event loop until the guest stops,
//! then kicks and joins every vCPU thread.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use event_manager::{EventManager, MutEventSubscriber, SubscriberOps};
use kvm_ioctls::VmFd;
use memtide_devices::serial::{GuestWatch, StdinInput};
use vmm_sys_util::eventfd::EventFd;

use super::stop_watcher::StopWatcher;
use super::{io_err, RunReport, VmError};
use crate::device_manager::Devices;
use crate::outcome::{ExitSignal, VmOutcome};
use crate::vcpu::{kick, profile, Vcpu, VcpuHandle};

/// The event loop's subscribers.
type Subscribers = EventManager<Arc<Mutex<dyn MutEventSubscriber + Send>>>;

/// A VM ready to run, built by [`super::VmmBuilder`]; it owns its devices
/// and vCPUs.
#[derive(Debug)]
pub struct Vmm {
    /// The KVM VM (kept open for as long as the vCPUs run).
    pub(super) vm: Arc<VmFd>,
    /// The configured vCPUs, started by [`Vmm::run`].
    pub(super) vcpus: Vec<Vcpu>,
    /// Every device.
    pub(super) devices: Devices,
    /// The VM's outcome.
    pub(super) exit: Arc<ExitSignal>,
    /// Written when an outcome arrives.
    pub(super) exit_evt: EventFd,
    /// Written by the i8042 and the ACPI sleep register.
    pub(super) reset_evt: EventFd,
    /// What the console saw on the guest's output.
    pub(super) watch: Arc<GuestWatch>,
    /// Stops the in-process balancer.
    pub(super) balancer_stop: Arc<AtomicBool>,
    /// Run the guest under the seccomp filter.
    pub(super) sandbox: bool,
}

impl Vmm {
    /// Starts the vCPUs and runs the event loop until the guest stops; then
    /// stops every vCPU and returns how the run ended.
    pub fn run(mut self) -> Result<RunReport, VmError> {
        kick::install_handler().map_err(|e| VmError::Io {
            what: "install the vCPU kick signal handler",
            source: e.into(),
        })?;
        let stopped = Arc::new(AtomicBool::new(false));
        let mut event_mgr = self.event_loop(&stopped)?;

        let profile_path = profile::requested();
        // Created now: the sandbox allows no file to be opened later.
        let profile_out = match &profile_path {
            Some(path) => Some(std::fs::File::create(path).map_err(io_err("create the profile"))?),
            None => None,
        };
        if self.sandbox {
            crate::sandbox::install_filter()?;
        }
        let guest_profile = Arc::new(profile::GuestProfile::default());
        if profile_path.is_some() {
            if let Some(first) = self.vcpus.first_mut() {
                first.set_profile(guest_profile.clone());
            }
        }
        let mut handles = Vec::with_capacity(self.vcpus.len());
        let mut sampler = None;
        let mut started = Ok(());
        for vcpu in std::mem::take(&mut self.vcpus) {
            match vcpu.spawn() {
                Ok(handle) => handles.push(handle),
                Err(e) => {
                    started = Err(io_err("start a vCPU thread")(e));
                    break;
                }
            }
            if handles.len() == 1 && profile_path.is_some() {
                match profile::start_sampler(guest_profile.clone(), &handles[0]) {
                    Ok(t) => sampler = Some(t),
                    Err(e) => {
                        started = Err(io_err("start the profiler")(e));
                        break;
                    }
                }
            }
        }
        let ran = started.and_then(|()| {
            while !stopped.load(Ordering::SeqCst) {
                event_mgr.run().map_err(VmError::EventLoop)?;
            }
            Ok(())
        });

        // The sampler signals vCPU 0's thread: end it before that thread
        // is joined.
        guest_profile.stop_sampling();
        if let Some(sampler) = sampler {
            if sampler.join().is_err() {
                log::error!("the profiler thread panicked");
            }
        }
        stop_vcpus(handles);
        if let (Some(path), Some(out)) = (&profile_path, profile_out) {
            if let Err(e) = guest_profile.write_to(out) {
                log::error!("cannot write the guest profile to {}: {e}", path.display());
            }
        }
        self.balancer_stop.store(true, Ordering::SeqCst);
        ran?;
        let outcome = self.exit.take().unwrap_or(VmOutcome::Reset);
        Ok(RunReport {
            outcome,
            panicked: self.watch.panicked(),
            guest_faults: self.watch.faults(),
            guest_faults_dropped: self.watch.faults_dropped(),
        })
    }

    /// The event loop with its subscribers: the stop watcher, stdin, and
    /// the devices' event-loop sides.
    fn event_loop(&mut self, stopped: &Arc<AtomicBool>) -> Result<Subscribers, VmError> {
        let mut event_mgr: Subscribers = EventManager::new().map_err(VmError::EventLoop)?;
        event_mgr.add_subscriber(Arc::new(Mutex::new(StopWatcher {
            exit_evt: self
                .exit_evt
                .try_clone()
                .map_err(io_err("clone exit eventfd"))?,
            reset_evt: self
                .reset_evt
                .try_clone()
                .map_err(io_err("clone reset eventfd"))?,
            exit: self.exit.clone(),
            stopped: stopped.clone(),
        })));
        event_mgr.add_subscriber(Arc::new(Mutex::new(StdinInput::new(
            self.devices.console.clone(),
        ))));
        if let Some(handler) = self.devices.balloon_handler.take() {
            event_mgr.add_subscriber(Arc::new(Mutex::new(handler)));
        }
        if let Some(handler) = self.devices.virtio_mem_handler.take() {
            event_mgr.add_subscriber(Arc::new(Mutex::new(handler)));
        }
        if let Some(channel) = self.devices.channel.take() {
            event_mgr.add_subscriber(Arc::new(Mutex::new(channel.handler)));
        }
        Ok(event_mgr)
    }

    /// The KVM VM.
    pub fn vm(&self) -> &Arc<VmFd> {
        &self.vm
    }
}

/// Kicks every vCPU out of `KVM_RUN` and waits for its thread to end.
fn stop_vcpus(handles: Vec<VcpuHandle>) {
    for handle in &handles {
        handle.kick();
    }
    for handle in handles {
        log::debug!("vcpu{}: joining", handle.id());
        handle.join();
    }
}
