//! The program images a target runs during one sampling run: the one it ran at start, and one
//! more for every `exec` the kernel reports (each sample carries its thread's
//! `task_struct.self_exec_id`, which `execve` increments).
//!
//! Addresses of different images may coincide (a Go service that re-execs its upgraded binary
//! maps both at 0x400000), so a user-space address of image `i > 0` is tagged with `i` in its
//! top byte before it enters the profile, and each image's own symbolizer names its addresses.
//! User-space addresses never reach the top byte (47 or 48 bits of virtual address space), and
//! kernel addresses and the profile's pseudo-addresses (markers) have it all ones, so tags
//! never collide with them.
//!
//! Threads of a child the target forks are another process (another tgid): the sampler keeps
//! only the target's own threads, so a child's exec is not the target's.

use std::{collections::HashMap, path::PathBuf};

use crate::symbolize::{ProcessSymbolizer, Symbolize, Symbols};

/// Bit position of an address's image tag.
const TAG_SHIFT: u32 = 56;
/// Bits of the image tag (images 1..=127; image 0 is untagged).
const TAG_MASK: u64 = 0x7f << TAG_SHIFT;
/// Most images told apart in one run; later execs share the last tag.
pub const MAX_IMAGES: usize = 127;

/// An address of image `image` as the profile stores it.
pub fn tag_address(addr: u64, image: usize) -> u64 {
    if image == 0 || addr & !(u64::MAX >> (64 - TAG_SHIFT)) != 0 {
        // Image 0, or not a user-space address (kernel, marker): unchanged.
        return addr;
    }
    addr | ((image.min(MAX_IMAGES) as u64) << TAG_SHIFT)
}

/// The image an address of the profile belongs to, and the address in that image.
pub fn split_address(addr: u64) -> (usize, u64) {
    if addr >> 63 != 0 {
        return (0, addr);
    }
    (((addr & TAG_MASK) >> TAG_SHIFT) as usize, addr & !TAG_MASK)
}

/// Identity of an executable file: device and inode of what `/proc/PID/exe` points at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExeIdentity {
    pub dev: u64,
    pub ino: u64,
}

impl ExeIdentity {
    /// The identity of the file `pid` runs now; `None` when it cannot be read (exited).
    pub fn of(pid: u32) -> Option<Self> {
        use std::os::unix::fs::MetadataExt as _;
        let meta = std::fs::metadata(format!("/proc/{pid}/exe")).ok()?;
        Some(Self {
            dev: meta.dev(),
            ino: meta.ino(),
        })
    }
}

/// A program image the target ran after an `exec`, as the report describes it.
#[derive(Clone, Debug, PartialEq)]
pub struct ExecInfo {
    /// Seconds into the run of the first sample of the new image.
    pub after_secs: f64,
    /// The executable (`/proc/PID/exe` resolved, as the target's mount namespace names it).
    pub binary: PathBuf,
    /// Go version of the new executable, when it is a Go binary.
    pub go_version: Option<String>,
    /// Its build id (GNU in hex, else Go's).
    pub build_id: Option<String>,
}

/// One image: which exec generation it is, and the symbolizer of its mappings.
pub struct Image {
    /// `self_exec_id` of its samples (`None` for the first image until its first sample).
    exec_id: Option<u32>,
    exe: Option<ExeIdentity>,
    pub symbolizer: ProcessSymbolizer,
}

/// Every image of the run, the first one opened at start.
pub struct Images {
    pid: u32,
    images: Vec<Image>,
}

/// What [`Images::image_of`] found for a sample.
pub enum ImageLookup {
    /// An image already known.
    Known(usize),
    /// The sample belongs to an image not seen before (the target exec'd): the caller
    /// inspects the new executable and calls [`Images::add`].
    New,
}

impl Images {
    /// The run's images, starting with the one `symbolizer` opened at start.
    pub fn new(pid: u32, symbolizer: ProcessSymbolizer) -> Self {
        Self {
            pid,
            images: vec![Image {
                exec_id: None,
                exe: ExeIdentity::of(pid),
                symbolizer,
            }],
        }
    }

    /// Number of images seen.
    pub fn len(&self) -> usize {
        self.images.len()
    }

    /// Always false: the first image exists from the start.
    pub fn is_empty(&self) -> bool {
        self.images.is_empty()
    }

    /// The image of a sample with exec generation `exec_id`.
    pub fn image_of(&mut self, exec_id: u32) -> ImageLookup {
        if let Some(i) = self
            .images
            .iter()
            .rposition(|im| im.exec_id == Some(exec_id))
        {
            return ImageLookup::Known(i);
        }
        let only_one = self.images.len() == 1;
        let first = &mut self.images[0];
        // The first sample: it is the start image unless the target already exec'd.
        if only_one && first.exec_id.is_none() && ExeIdentity::of(self.pid) == first.exe {
            first.exec_id = Some(exec_id);
            return ImageLookup::Known(0);
        }
        if self.images.len() > MAX_IMAGES {
            return ImageLookup::Known(self.images.len() - 1);
        }
        ImageLookup::New
    }

    /// Adds the image the target runs now, for samples of `exec_id`; returns its index.
    pub fn add(&mut self, exec_id: u32, symbolizer: ProcessSymbolizer) -> usize {
        self.images.push(Image {
            exec_id: Some(exec_id),
            exe: ExeIdentity::of(self.pid),
            symbolizer,
        });
        self.images.len() - 1
    }

    /// Image `i` (`i < len()`).
    pub fn get_mut(&mut self, i: usize) -> &mut Image {
        let last = self.images.len() - 1;
        &mut self.images[i.min(last)]
    }

    /// Names the profile's (tagged) addresses, each with its own image's symbolizer.
    pub fn symbolize(&mut self, addresses: &[u64]) -> Symbols {
        if self.images.len() == 1 {
            return self.images[0].symbolizer.symbolize(addresses);
        }
        let mut by_image: HashMap<usize, Vec<u64>> = HashMap::new();
        for &addr in addresses {
            let (image, _) = split_address(addr);
            by_image.entry(image).or_default().push(addr);
        }
        let mut out = Symbols::default();
        for (image, tagged) in by_image {
            let plain: Vec<u64> = tagged.iter().map(|&a| split_address(a).1).collect();
            let symbols = self.get_mut(image).symbolizer.symbolize(&plain);
            for (&t, &p) in tagged.iter().zip(&plain) {
                out.by_addr.insert(t, symbols.frames(p).into_owned());
            }
            out.mappings.extend(
                symbols
                    .mappings
                    .into_iter()
                    .map(|m| crate::symbolize::ModuleMapping { image, ..m }),
            );
        }
        out
    }
}

impl Symbolize for Images {
    /// Each tagged address with its own image's symbolizer ([`Images::symbolize`]).
    fn symbolize(&mut self, addrs: &[u64]) -> Symbols {
        Images::symbolize(self, addrs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_only_user_addresses_of_later_images() {
        let user = 0x4a_8ba0;
        assert_eq!(tag_address(user, 0), user);
        let tagged = tag_address(user, 3);
        assert_ne!(tagged, user);
        assert_eq!(split_address(tagged), (3, user));
        assert_eq!(split_address(user), (0, user));
        // A 48-bit address (arm64, high PIE mappings) keeps its bits.
        let high = 0x0000_ffff_f7ff_0000;
        assert_eq!(split_address(tag_address(high, 1)), (1, high));
        // Kernel addresses and markers are never tagged.
        for addr in [0xffff_ffff_8100_0000, u64::MAX, u64::MAX - 1] {
            assert_eq!(tag_address(addr, 5), addr);
            assert_eq!(split_address(addr), (0, addr));
        }
        // Past the last tag, images share it.
        assert_eq!(split_address(tag_address(user, 500)), (MAX_IMAGES, user));
    }
}
