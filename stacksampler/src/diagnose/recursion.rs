//! Folding repeated cycles of frames in one stack.

/// A piece of a folded stack.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Segment {
    /// The frame at this index of the input.
    Frame(usize),
    /// `len` frames starting at `start` form a cycle body, repeated `repeat` times in a row
    /// (covering `start .. start + len * repeat` of the input).
    Cycle { start: usize, len: usize, repeat: usize },
}

/// Folds `frames` (innermost first) into frames and repeated cycles. Placeholder: no folding yet.
pub fn fold<T: Eq>(frames: &[T]) -> Vec<Segment> {
    (0..frames.len()).map(Segment::Frame).collect()
}
