//! The perf-event sampler: configures the sampling program of a loaded object and attaches it
//! to one CPU-clock perf event per online CPU. Dropping the [`LoadedSampler`] (which owns the
//! [`Ebpf`]) detaches everything and closes every fd, so nothing stays attached after the run.

use std::os::fd::OwnedFd;

use aya::{
    Ebpf,
    maps::{Array, MapData, PerCpuArray, RingBuf},
    programs::{
        PerfEvent,
        perf_event::{PerfEventConfig, PerfEventScope, SamplePolicy, SoftwareEvent},
    },
    sys::{Stats, enable_stats},
    util::online_cpus,
};
use stacksampler_common::{
    CONFIG_KEY, ConfigFlags, Counters, GoLayout, NativeConfig, PidNamespace, SamplerConfig,
    names::{CONFIG_MAP, COUNTERS_MAP, SAMPLE_PROGRAM, SAMPLES_MAP},
};

use super::{BpfError, KernelCost, counters};

/// Environment variable that turns on the kernel's walk check when set to `1`: every sample's
/// stack is walked twice, from bulk copies and record by record, and the samples whose walks
/// differ are counted ([`stacksampler_common::Counters::walk_mismatches`]). A debug switch for
/// the tests; it doubles the walk's cost.
pub const VERIFY_WALK_ENV: &str = "STACKSAMPLER_VERIFY_WALK";

/// What to load and where to attach.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// Process (tgid) to sample.
    pub pid: u32,
    /// Samples per second per CPU.
    pub frequency_hz: u64,
    /// Frames walked per sample.
    pub max_frames: u32,
    /// `task_struct.thread.fsbase` offset (amd64).
    pub task_fsbase_offset: u32,
    /// `task_struct.self_exec_id` offset (0: samples carry no exec id).
    pub task_exec_id_offset: u32,
    /// Go runtime layout; `None` leaves goroutine fields unknown.
    pub go_layout: Option<GoLayout>,
    /// The target's PID namespace, in which Go's `m.procid` is a thread id; `None`: the
    /// kernel's global ids.
    pub pidns: Option<PidNamespace>,
    /// Kernel-side diagnostics through aya-log.
    pub verbose: bool,
    /// Record kernel stacks of samples in kernel mode.
    pub kernel_stacks: bool,
    /// Count the program's run time in the kernel (bpf_stats), for [`LoadedSampler::kernel_cost`].
    pub kernel_stats: bool,
    /// Go text and the cgo crossings: samples in C code reached from Go carry their native
    /// stack (`None`: frame-pointer walk only).
    pub native: Option<NativeConfig>,
}

/// A loaded, attached sampler. Drop it to detach.
pub struct LoadedSampler {
    ebpf: Ebpf,
    /// What the kernel program was configured with, rewritten by [`Self::set_go_layout`].
    config: SamplerConfig,
    logger: Option<aya_log::EbpfLogger<&'static dyn log::Log>>,
    attached_cpus: usize,
    _stats: Option<OwnedFd>,
}

impl LoadedSampler {
    /// Loads the sampling program of `ebpf` (see [`super::load`]), writes its configuration,
    /// and attaches it on every online CPU. The sampler owns `ebpf` from now on.
    pub fn attach(mut ebpf: Ebpf, options: &LoadOptions) -> Result<Self, BpfError> {
        let stats = if options.kernel_stats {
            Some(enable_stats(Stats::RunTime)?)
        } else {
            None
        };
        let logger = if options.verbose {
            match aya_log::EbpfLogger::init(&mut ebpf) {
                Ok(l) => Some(l),
                Err(e) => {
                    log::warn!("kernel-side logging unavailable: {e}");
                    None
                }
            }
        } else {
            None
        };

        let mut flags = 0;
        if options.go_layout.is_some() {
            flags |= ConfigFlags::GO_LAYOUT_KNOWN;
        }
        if options.pidns.is_some() {
            flags |= ConfigFlags::PIDNS_KNOWN;
        }
        if options.verbose {
            flags |= ConfigFlags::VERBOSE;
        }
        if options.kernel_stacks {
            flags |= ConfigFlags::KERNEL_STACKS;
        }
        if options.native.is_some() {
            flags |= ConfigFlags::NATIVE_STACKS;
        }
        if std::env::var_os(VERIFY_WALK_ENV).is_some_and(|v| v == "1") {
            flags |= ConfigFlags::VERIFY_WALK;
        }
        let config = SamplerConfig {
            target_tgid: options.pid,
            max_frames: options.max_frames,
            task_fsbase_offset: options.task_fsbase_offset,
            flags,
            go: options.go_layout.unwrap_or_default(),
            pidns: options.pidns.unwrap_or_default(),
            task_exec_id_offset: options.task_exec_id_offset,
            _pad: 0,
            native: options.native.unwrap_or_default(),
        };
        write_config(&mut ebpf, config)?;

        let program: &mut PerfEvent = ebpf
            .program_mut(SAMPLE_PROGRAM)
            .ok_or(BpfError::Missing(SAMPLE_PROGRAM))?
            .try_into()
            .map_err(BpfError::program(SAMPLE_PROGRAM))?;
        program.load().map_err(BpfError::program(SAMPLE_PROGRAM))?;
        let cpus = online_cpus().map_err(|(what, e)| BpfError::Cpus(what, e))?;
        for cpu in &cpus {
            program
                .attach(
                    PerfEventConfig::Software(SoftwareEvent::CpuClock),
                    PerfEventScope::AllProcessesOneCpu { cpu: *cpu },
                    SamplePolicy::Frequency(options.frequency_hz),
                    false,
                )
                .map_err(BpfError::program(SAMPLE_PROGRAM))?;
        }
        Ok(Self {
            ebpf,
            config,
            logger,
            attached_cpus: cpus.len(),
            _stats: stats,
        })
    }

    /// Tells the running program the target's new Go layout (after an `exec`); `None` leaves
    /// goroutine fields unknown from now on.
    pub fn set_go_layout(&mut self, layout: Option<GoLayout>) -> Result<(), BpfError> {
        let mut config = self.config;
        config.go = layout.unwrap_or_default();
        config.flags &= !ConfigFlags::GO_LAYOUT_KNOWN;
        // The new image's code is elsewhere: its native samples are walked as before.
        config.flags &= !ConfigFlags::NATIVE_STACKS;
        config.native = NativeConfig::default();
        if layout.is_some() {
            config.flags |= ConfigFlags::GO_LAYOUT_KNOWN;
        }
        write_config(&mut self.ebpf, config)?;
        self.config = config;
        Ok(())
    }

    /// Number of CPUs a perf event was attached on.
    pub fn attached_cpus(&self) -> usize {
        self.attached_cpus
    }

    /// Takes the sample ring buffer (once).
    pub fn take_samples(&mut self) -> Result<RingBuf<MapData>, BpfError> {
        let map = self
            .ebpf
            .take_map(SAMPLES_MAP)
            .ok_or(BpfError::Missing(SAMPLES_MAP))?;
        Ok(RingBuf::try_from(map)?)
    }

    /// Sums the per-CPU counters.
    pub fn counters(&self) -> Result<Counters, BpfError> {
        let map: PerCpuArray<_, Counters> = PerCpuArray::try_from(
            self.ebpf
                .map(COUNTERS_MAP)
                .ok_or(BpfError::Missing(COUNTERS_MAP))?,
        )?;
        counters::sum(&map)
    }

    /// Run count and run time of the program so far (zero unless `kernel_stats` was asked).
    pub fn kernel_cost(&self) -> Result<KernelCost, BpfError> {
        let program: &PerfEvent = self
            .ebpf
            .program(SAMPLE_PROGRAM)
            .ok_or(BpfError::Missing(SAMPLE_PROGRAM))?
            .try_into()
            .map_err(BpfError::program(SAMPLE_PROGRAM))?;
        let info = program.info().map_err(BpfError::program(SAMPLE_PROGRAM))?;
        Ok(KernelCost::of(&info))
    }

    /// Forwards pending kernel-side log records (with `--verbose`).
    pub fn flush_logs(&mut self) {
        if let Some(logger) = self.logger.as_mut() {
            logger.flush();
        }
    }
}

/// Writes the one entry of the program's configuration map.
fn write_config(ebpf: &mut Ebpf, config: SamplerConfig) -> Result<(), BpfError> {
    let mut config_map: Array<_, SamplerConfig> = Array::try_from(
        ebpf.map_mut(CONFIG_MAP)
            .ok_or(BpfError::Missing(CONFIG_MAP))?,
    )?;
    config_map.set(CONFIG_KEY, config, 0)?;
    Ok(())
}
