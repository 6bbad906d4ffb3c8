//! json output (placeholder).
use super::{RenderError, Renderer, Report};
use std::io::Write;
/// Writes json.
#[derive(Clone, Debug, Default)]
pub struct JsonRenderer;
impl Renderer for JsonRenderer {
    fn render(&self, _report: &Report, _out: &mut dyn Write) -> Result<(), RenderError> {
        Ok(())
    }
}
