//! pprof output (placeholder).
use super::{RenderError, Renderer, Report};
use std::io::Write;
/// Writes pprof.
#[derive(Clone, Debug, Default)]
pub struct PprofRenderer;
impl Renderer for PprofRenderer {
    fn render(&self, _report: &Report, _out: &mut dyn Write) -> Result<(), RenderError> {
        Ok(())
    }
}
