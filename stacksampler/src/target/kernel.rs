//! Kernel structure offsets from the running kernel's BTF (`/sys/kernel/btf/vmlinux`).
//!
//! The eBPF program reads `task_struct.thread.fsbase` (the amd64 thread pointer, where Go keeps
//! `g`) at an offset that differs between kernel builds, so it is looked up here, at start.

use std::path::{Path, PathBuf};

use btf_rs::{Backend, Btf, Type};

/// Where the kernel exposes its own BTF.
pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

/// Errors finding kernel offsets.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error(
        "this kernel has no BTF ({0} is missing): stacksampler needs a kernel built with CONFIG_DEBUG_INFO_BTF=y"
    )]
    NoBtf(PathBuf),
    #[error("reading kernel BTF {path}: {message}")]
    Btf { path: PathBuf, message: String },
    #[error("kernel BTF has no member {0}")]
    MissingMember(String),
}

/// The `task_struct` offsets the sampling program reads, found in one parse of the kernel's BTF.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TaskOffsets {
    /// `task_struct.thread.fsbase` (x86_64: the thread pointer, where Go keeps `g`). On other
    /// architectures Go's `g` is read from a register instead and this is 0.
    pub fsbase: u32,
    /// `task_struct.self_exec_id`, which every `execve` increments: samples carry it so an
    /// exec during a run is seen at the exact sample.
    pub exec_id: u32,
}

/// Reads [`TaskOffsets`] from the running kernel's BTF.
pub fn task_offsets() -> Result<TaskOffsets, KernelError> {
    let btf = open(Path::new(VMLINUX_BTF))?;
    let fsbase = if cfg!(target_arch = "x86_64") {
        btf.member_offset("task_struct", &["thread", "fsbase"])?
    } else {
        0
    };
    Ok(TaskOffsets {
        fsbase,
        exec_id: btf.member_offset("task_struct", &["self_exec_id"])?,
    })
}

/// Byte offset of the nested member `path` inside struct `root` in the BTF file `btf_path`.
pub fn member_offset(btf_path: &Path, root: &str, path: &[&str]) -> Result<u32, KernelError> {
    open(btf_path)?.member_offset(root, path)
}

/// An opened BTF file and its path (for errors).
struct BtfFile {
    btf: Btf,
    path: PathBuf,
}

fn open(btf_path: &Path) -> Result<BtfFile, KernelError> {
    if !btf_path.exists() {
        return Err(KernelError::NoBtf(btf_path.to_owned()));
    }
    // Mmap, not the default cache: a few lookups do not pay for parsing every type of vmlinux
    // (about 1.7 s of start-up on a busy 2-core machine). Older kernels (6.1) cannot mmap
    // /sys/kernel/btf/vmlinux ("No such device"): they get the parsing backend.
    let btf = match Btf::from_file_with_backend(btf_path, Backend::Mmap) {
        Ok(btf) => btf,
        Err(_) => Btf::from_file_with_backend(btf_path, Backend::Cache)
            .map_err(|e| btf_error(btf_path, e))?,
    };
    Ok(BtfFile {
        btf,
        path: btf_path.to_owned(),
    })
}

fn btf_error(path: &Path, e: btf_rs::Error) -> KernelError {
    KernelError::Btf {
        path: path.to_owned(),
        message: e.to_string(),
    }
}

impl BtfFile {
    fn member_offset(&self, root: &str, path: &[&str]) -> Result<u32, KernelError> {
        let btf = &self.btf;
        let mut current = btf
            .resolve_types_by_name(root)
            .map_err(|e| btf_error(&self.path, e))?
            .into_iter()
            .find(|t| matches!(t, Type::Struct(_)))
            .ok_or_else(|| KernelError::MissingMember(root.to_owned()))?;
        let mut offset_bits = 0u32;
        let mut walked = root.to_owned();
        for name in path {
            walked = format!("{walked}.{name}");
            let (bits, ty) = find_member(btf, &current, name)
                .ok_or_else(|| KernelError::MissingMember(walked.clone()))?;
            offset_bits += bits;
            current = ty;
        }
        Ok(offset_bits / 8)
    }
}

/// Finds member `name` of struct/union `ty`, looking through anonymous members; returns its bit
/// offset and its type with typedefs and qualifiers removed.
fn find_member(btf: &Btf, ty: &Type, name: &str) -> Option<(u32, Type)> {
    let members = match ty {
        Type::Struct(s) | Type::Union(s) => &s.members,
        _ => return None,
    };
    for m in members {
        let member_name = btf.resolve_name(m).unwrap_or_default();
        let member_ty = strip(btf, btf.resolve_chained_type(m).ok()?);
        if member_name == name {
            return Some((m.bit_offset(), member_ty));
        }
        if member_name.is_empty()
            && let Some((bits, found)) = find_member(btf, &member_ty, name)
        {
            return Some((m.bit_offset() + bits, found));
        }
    }
    None
}

/// Removes typedefs, const, volatile and restrict around a type.
fn strip(btf: &Btf, mut ty: Type) -> Type {
    for _ in 0..16 {
        let next = match &ty {
            Type::Typedef(t) => btf.resolve_chained_type(t),
            Type::Const(t) => btf.resolve_chained_type(t),
            Type::Volatile(t) => btf.resolve_chained_type(t),
            Type::Restrict(t) => btf.resolve_chained_type(t),
            _ => return ty,
        };
        match next {
            Ok(t) => ty = t,
            Err(_) => return ty,
        }
    }
    ty
}

/// Monotonic clock in nanoseconds (the clock of `bpf_ktime_get_ns`).
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid pointer to a timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn finds_fsbase_in_this_kernel() {
        let off = task_offsets().expect("this machine has BTF").fsbase;
        // task_struct is several KiB; thread comes near its end.
        assert!(off > 1024 && off < 16384, "fsbase offset {off}");
        assert_eq!(off % 8, 0);
    }

    #[test]
    fn finds_self_exec_id_in_this_kernel() {
        let off = task_offsets().expect("this machine has BTF").exec_id;
        assert!(off > 0 && off < 16384, "self_exec_id offset {off}");
        assert_eq!(off % 8, 0, "a u64 member");
    }

    #[test]
    fn missing_btf_is_a_clear_error() {
        let e = member_offset(Path::new("/nonexistent/btf"), "task_struct", &["thread"]);
        assert!(matches!(e, Err(KernelError::NoBtf(_))));
    }

    #[test]
    fn missing_member_is_named() {
        let e = member_offset(Path::new(VMLINUX_BTF), "task_struct", &["no_such_member"]);
        match e {
            Err(KernelError::MissingMember(m)) => assert_eq!(m, "task_struct.no_such_member"),
            other => panic!("{other:?}"),
        }
    }
}
