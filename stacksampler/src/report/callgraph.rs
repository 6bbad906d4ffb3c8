//! Call topology: caller -> callee edges between functions with sample counts, as a text table
//! (`--format callgraph`) or a Graphviz graph (`--format dot`).
//!
//! An edge counts the samples whose stack holds that call at least once (a recursion does not
//! count a sample once per level); a function's `flat` counts samples where it is the innermost
//! frame, `cum` those where it is anywhere. An edge is `recursive` when it lies on a cycle of the
//! call graph (its callee can reach its caller, or it calls itself).

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    io::Write,
};

use super::{RenderError, Renderer, Report, stack};

/// Text table or DOT.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Style {
    /// Functions and edges as aligned text tables.
    Table,
    /// A Graphviz `digraph`.
    Dot,
}

/// Writes the call graph.
#[derive(Clone, Debug)]
pub struct CallgraphRenderer {
    pub style: Style,
}

/// Per-function sample counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NodeStats {
    /// Samples with this function as the innermost frame.
    pub flat: u64,
    /// Samples with this function anywhere on the stack.
    pub cum: u64,
}

/// One caller -> callee edge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Edge {
    pub caller: String,
    pub callee: String,
    /// Samples whose stack holds this call.
    pub samples: u64,
    /// The edge lies on a cycle of the call graph.
    pub recursive: bool,
}

/// The call graph of a report.
#[derive(Clone, Debug, Default)]
pub struct CallGraph {
    pub functions: BTreeMap<String, NodeStats>,
    /// By descending samples, then caller and callee names.
    pub edges: Vec<Edge>,
    /// Kept samples of the report.
    pub total: u64,
}

impl CallGraph {
    /// Builds the graph of `report` from its stacks expanded into source frames.
    pub fn build(report: &Report) -> Self {
        let mut functions: BTreeMap<String, NodeStats> = BTreeMap::new();
        let mut edge_counts: HashMap<(String, String), u64> = HashMap::new();
        // CPU samples only: wall samples (`--wall`) count goroutines, not CPU time.
        for row in report.profile.ranked_of(crate::sample::SampleKind::Cpu) {
            let count = row.stats.count;
            let frames = stack::expand(report, row.key.stack);
            if let Some(leaf) = frames.first() {
                functions
                    .entry(leaf.frame.function.to_string())
                    .or_default()
                    .flat += count;
            }
            let mut seen_fn: HashSet<&str> = HashSet::new();
            for f in &frames {
                if seen_fn.insert(&*f.frame.function) {
                    functions
                        .entry(f.frame.function.to_string())
                        .or_default()
                        .cum += count;
                }
            }
            let mut seen_edge: HashSet<(&str, &str)> = HashSet::new();
            for pair in frames.windows(2) {
                let (callee, caller) = (&*pair[0].frame.function, &*pair[1].frame.function);
                if seen_edge.insert((caller, callee)) {
                    *edge_counts
                        .entry((caller.to_owned(), callee.to_owned()))
                        .or_default() += count;
                }
            }
        }
        let on_cycle = recursive_edges(edge_counts.keys());
        let mut edges: Vec<Edge> = edge_counts
            .into_iter()
            .map(|((caller, callee), samples)| {
                let recursive = on_cycle.contains(&(caller.clone(), callee.clone()));
                Edge {
                    caller,
                    callee,
                    samples,
                    recursive,
                }
            })
            .collect();
        edges.sort_by(|a, b| {
            b.samples
                .cmp(&a.samples)
                .then_with(|| a.caller.cmp(&b.caller))
                .then_with(|| a.callee.cmp(&b.callee))
        });
        Self {
            functions,
            edges,
            total: report.profile.counts.kept,
        }
    }
}

/// The edges that lie on a cycle: both ends in one strongly connected component (Tarjan's
/// algorithm, iterative so a large graph cannot overflow the stack), or a self call.
fn recursive_edges<'a>(
    edges: impl Iterator<Item = &'a (String, String)>,
) -> HashSet<(String, String)> {
    let edges: Vec<&(String, String)> = edges.collect();
    let mut ids: HashMap<&str, usize> = HashMap::new();
    for (a, b) in &edges {
        for name in [a.as_str(), b.as_str()] {
            let next = ids.len();
            ids.entry(name).or_insert(next);
        }
    }
    let n = ids.len();
    let mut succ: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (a, b) in &edges {
        succ[ids[a.as_str()]].push(ids[b.as_str()]);
    }
    let component = strongly_connected(&succ);
    edges
        .into_iter()
        .filter(|(a, b)| a == b || component[ids[a.as_str()]] == component[ids[b.as_str()]])
        .cloned()
        .collect()
}

/// Component index of every node of the graph given by successor lists.
fn strongly_connected(succ: &[Vec<usize>]) -> Vec<usize> {
    const UNSEEN: usize = usize::MAX;
    let n = succ.len();
    let mut index = vec![UNSEEN; n];
    let mut low = vec![0; n];
    let mut on_stack = vec![false; n];
    let mut stack = Vec::new();
    let mut component = vec![UNSEEN; n];
    let mut next_index = 0;
    let mut next_component = 0;
    for root in 0..n {
        if index[root] != UNSEEN {
            continue;
        }
        // (node, next successor to visit)
        let mut work = vec![(root, 0usize)];
        index[root] = next_index;
        low[root] = next_index;
        next_index += 1;
        stack.push(root);
        on_stack[root] = true;
        while let Some(&mut (v, ref mut i)) = work.last_mut() {
            if let Some(&w) = succ[v].get(*i) {
                *i += 1;
                if index[w] == UNSEEN {
                    index[w] = next_index;
                    low[w] = next_index;
                    next_index += 1;
                    stack.push(w);
                    on_stack[w] = true;
                    work.push((w, 0));
                } else if on_stack[w] {
                    low[v] = low[v].min(index[w]);
                }
                continue;
            }
            work.pop();
            if let Some(&(parent, _)) = work.last() {
                low[parent] = low[parent].min(low[v]);
            }
            if low[v] == index[v] {
                while let Some(w) = stack.pop() {
                    on_stack[w] = false;
                    component[w] = next_component;
                    if w == v {
                        break;
                    }
                }
                next_component += 1;
            }
        }
    }
    component
}

impl Renderer for CallgraphRenderer {
    fn render(&self, report: &Report, out: &mut dyn Write) -> Result<(), RenderError> {
        let graph = CallGraph::build(report);
        match self.style {
            Style::Table => write_table(report, &graph, out)?,
            Style::Dot => write_dot(report, &graph, out)?,
        }
        Ok(())
    }
}

fn write_table(report: &Report, g: &CallGraph, out: &mut dyn Write) -> std::io::Result<()> {
    let run = &report.run;
    writeln!(
        out,
        "call graph: pid {} {}, {} samples",
        run.pid,
        run.binary.display(),
        g.total
    )?;
    writeln!(
        out,
        "\nfunctions (flat: innermost frame, cum: anywhere on the stack):"
    )?;
    writeln!(
        out,
        "{:>9} {:>6} {:>9} {:>6}  function",
        "flat", "flat%", "cum", "cum%"
    )?;
    let mut funcs: Vec<(&String, &NodeStats)> = g.functions.iter().collect();
    funcs.sort_by(|a, b| {
        b.1.cum
            .cmp(&a.1.cum)
            .then_with(|| b.1.flat.cmp(&a.1.flat))
            .then_with(|| a.0.cmp(b.0))
    });
    for (name, s) in funcs {
        writeln!(
            out,
            "{:>9} {:>5.1}% {:>9} {:>5.1}%  {name}",
            s.flat,
            stack::percent(s.flat, g.total),
            s.cum,
            stack::percent(s.cum, g.total)
        )?;
    }
    writeln!(out, "\nedges (samples whose stack holds the call):")?;
    writeln!(out, "{:>9} {:>6}  caller -> callee", "samples", "%")?;
    for e in &g.edges {
        writeln!(
            out,
            "{:>9} {:>5.1}%  {} -> {}{}",
            e.samples,
            stack::percent(e.samples, g.total),
            e.caller,
            e.callee,
            if e.recursive { "  recursive" } else { "" }
        )?;
    }
    Ok(())
}

/// `s` as the inside of a DOT double-quoted string.
fn dot_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' | '\r' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

fn write_dot(report: &Report, g: &CallGraph, out: &mut dyn Write) -> std::io::Result<()> {
    let run = &report.run;
    let title = format!(
        "stacksampler: pid {} {}, {} samples; red edges are recursive",
        run.pid,
        run.binary.display(),
        g.total
    );
    writeln!(out, "digraph stacksampler {{")?;
    writeln!(
        out,
        "  graph [label=\"{}\", labelloc=t, fontname=\"Helvetica\"];",
        dot_escape(&title)
    )?;
    writeln!(
        out,
        "  node [shape=box, style=filled, fontname=\"Helvetica\"];"
    )?;
    writeln!(out, "  edge [fontname=\"Helvetica\"];")?;
    let ids: HashMap<&str, usize> = g
        .functions
        .keys()
        .enumerate()
        .map(|(i, name)| (name.as_str(), i))
        .collect();
    for (name, s) in &g.functions {
        let share = stack::percent(s.cum, g.total);
        // Hotter functions get a deeper red fill.
        let shade = 255 - (share * 1.5).min(150.0) as u8;
        writeln!(
            out,
            "  n{} [label=\"{}\\nflat {} ({:.1}%)\\ncum {} ({:.1}%)\", fillcolor=\"#ff{shade:02x}{shade:02x}\"];",
            ids[name.as_str()],
            dot_escape(name),
            s.flat,
            stack::percent(s.flat, g.total),
            s.cum,
            share
        )?;
    }
    for e in &g.edges {
        let width = 1.0 + 4.0 * stack::percent(e.samples, g.total) / 100.0;
        let (Some(a), Some(b)) = (ids.get(e.caller.as_str()), ids.get(e.callee.as_str())) else {
            continue;
        };
        if e.recursive {
            writeln!(
                out,
                "  n{a} -> n{b} [label=\"{} recursive\", penwidth={width:.2}, color=\"#c00000\", fontcolor=\"#c00000\", class=\"recursive\"];",
                e.samples
            )?;
        } else {
            writeln!(
                out,
                "  n{a} -> n{b} [label=\"{}\", penwidth={width:.2}];",
                e.samples
            )?;
        }
    }
    writeln!(out, "}}")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn components_find_cycles() {
        // 0 -> 1 -> 2 -> 1, 2 -> 3, 3 -> 3
        let succ = vec![vec![1], vec![2], vec![1, 3], vec![3]];
        let c = strongly_connected(&succ);
        assert_eq!(c[1], c[2]);
        assert_ne!(c[0], c[1]);
        assert_ne!(c[3], c[2]);
        let edges: Vec<(String, String)> =
            [("a", "b"), ("b", "c"), ("c", "b"), ("c", "d"), ("d", "d")]
                .iter()
                .map(|(x, y)| (x.to_string(), y.to_string()))
                .collect();
        let rec = recursive_edges(edges.iter());
        let mut rec: Vec<_> = rec.into_iter().collect();
        rec.sort();
        let want: Vec<(String, String)> = [("b", "c"), ("c", "b"), ("d", "d")]
            .iter()
            .map(|(x, y)| (x.to_string(), y.to_string()))
            .collect();
        assert_eq!(rec, want);
    }

    #[test]
    fn escapes_dot_strings() {
        assert_eq!(dot_escape(r#"a"b\c"#), r#"a\"b\\c"#);
    }
}
