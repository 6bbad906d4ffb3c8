//! Which samples are kept: goroutine state and stack depth filters.

use crate::{
    goruntime::state::StateSet,
    sample::{LabelFilter, Sample},
};

/// Which samples a run keeps (`Default`: all).
#[derive(Clone, Debug, Default)]
pub struct Filter {
    /// Keep only these states (all when `None`).
    pub states: Option<StateSet>,
    /// Keep only stacks with at least this many frames.
    pub min_depth: usize,
    /// Keep only this goroutine (`--goid`).
    pub goid: Option<u64>,
    /// Keep only goroutines carrying every one of these pprof labels (`--label key=value`).
    pub labels: Vec<LabelFilter>,
}

impl Filter {
    /// Whether `sample` passes.
    pub fn keep(&self, sample: &Sample) -> bool {
        if sample.depth() < self.min_depth {
            return false;
        }
        if let Some(goid) = self.goid
            && sample.goroutine.is_none_or(|g| g.goid != goid)
        {
            return false;
        }
        if !self
            .labels
            .iter()
            .all(|l| sample.labels.get(&l.key) == Some(l.value.as_str()))
        {
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
            goroutine: state.map(|state| GoroutineInfo {
                goid: 1,
                state,
                waitreason: 0,
                g_addr: 0,
            }),
            frames: vec![1; depth],
            ..Default::default()
        }
    }

    #[test]
    fn filters_by_state_and_depth() {
        let f = Filter {
            states: Some("syscall".parse().unwrap()),
            min_depth: 0,
            ..Default::default()
        };
        assert!(f.keep(&sample(3, Some(GoroutineState::Syscall))));
        assert!(!f.keep(&sample(3, Some(GoroutineState::Running))));
        assert!(!f.keep(&sample(3, None)));
        let f = Filter {
            states: None,
            min_depth: 1024,
            ..Default::default()
        };
        assert!(f.keep(&sample(1024, None)));
        assert!(!f.keep(&sample(1023, Some(GoroutineState::Running))));
    }

    #[test]
    fn filters_by_goid_and_labels() {
        let f = Filter {
            goid: Some(1),
            ..Default::default()
        };
        assert!(f.keep(&sample(1, Some(GoroutineState::Running))));
        assert!(!f.keep(&sample(1, None)));
        let mut other = sample(1, Some(GoroutineState::Running));
        if let Some(g) = other.goroutine.as_mut() {
            g.goid = 2;
        }
        assert!(!f.keep(&other));

        let f = Filter {
            labels: vec!["req=42".parse().unwrap()],
            ..Default::default()
        };
        let mut labelled = sample(1, Some(GoroutineState::Running));
        labelled.labels.set = Some(crate::sample::LabelSet::from(vec![
            ("req".to_owned(), "42".to_owned()),
            ("user".to_owned(), "x".to_owned()),
        ]));
        assert!(f.keep(&labelled));
        assert!(!f.keep(&sample(1, Some(GoroutineState::Running))));
        let f = Filter {
            labels: vec!["req=43".parse().unwrap()],
            ..Default::default()
        };
        assert!(!f.keep(&labelled));
        assert!("noequals".parse::<LabelFilter>().is_err());
        assert!("=v".parse::<LabelFilter>().is_err());
        assert_eq!(
            "k=".parse::<LabelFilter>(),
            Ok(LabelFilter {
                key: "k".into(),
                value: String::new()
            })
        );
    }
}
