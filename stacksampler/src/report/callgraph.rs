//! callgraph output (placeholder).
use super::{RenderError, Renderer, Report};
use std::io::Write;
/// Table or DOT.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Style {
    Table,
    Dot,
}
/// Writes call graphs.
#[derive(Clone, Debug)]
pub struct CallgraphRenderer {
    pub style: Style,
}
impl Renderer for CallgraphRenderer {
    fn render(&self, _report: &Report, _out: &mut dyn Write) -> Result<(), RenderError> {
        Ok(())
    }
}
