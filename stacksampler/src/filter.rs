//! Which samples are kept: goroutine state and stack depth filters.

use crate::{config::Config, goruntime::state::StateSet, sample::Sample};

/// Sample filter built from the command line.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    /// Keep only these states (all when `None`).
    pub states: Option<StateSet>,
    /// Keep only stacks with at least this many frames.
    pub min_depth: usize,
}

impl Filter {
    /// The filter the command line asks for.
    pub fn from_config(config: &Config) -> Self {
        Self {
            states: config.state,
            min_depth: config.min_depth,
        }
    }

    /// Whether `sample` passes.
    pub fn keep(&self, sample: &Sample) -> bool {
        if sample.depth() < self.min_depth {
            return false;
        }
        match self.states {
            Some(states) => states.contains(sample.state()),
            None => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{goruntime::state::GoroutineState, sample::GoroutineInfo};

    fn sample(depth: usize, state: Option<GoroutineState>) -> Sample {
        Sample {
            time_ns: 0,
            tid: 1,
            cpu: 0,
            goroutine: state.map(|state| GoroutineInfo {
                goid: 1,
                state,
                waitreason: 0,
                g_addr: 0,
            }),
            stack_bytes: None,
            frames: vec![1; depth],
            truncated: false,
            kernel_mode: false,
            switch_index: None,
        }
    }

    #[test]
    fn filters_by_state_and_depth() {
        let f = Filter {
            states: Some("syscall".parse().unwrap()),
            min_depth: 0,
        };
        assert!(f.keep(&sample(3, Some(GoroutineState::Syscall))));
        assert!(!f.keep(&sample(3, Some(GoroutineState::Running))));
        assert!(!f.keep(&sample(3, None)));
        let f = Filter {
            states: None,
            min_depth: 1024,
        };
        assert!(f.keep(&sample(1024, None)));
        assert!(!f.keep(&sample(1023, Some(GoroutineState::Running))));
    }
}
