//! flamegraph output (placeholder).
use super::{RenderError, Renderer, Report};
use std::io::Write;
/// Writes SVG.
#[derive(Clone, Debug, Default)]
pub struct FlamegraphRenderer {
    pub state_frames: bool,
}
impl Renderer for FlamegraphRenderer {
    fn render(&self, _report: &Report, _out: &mut dyn Write) -> Result<(), RenderError> {
        Ok(())
    }
}
