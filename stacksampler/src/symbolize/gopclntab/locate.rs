//! Finding the table: the header (`.gopclntab`, `.go.module`, or a validated scan), then
//! `moduledata` for the text start and `gofunc`.

use super::*;

/// A located header: where it is, and its fields.
pub(super) struct Header {
    /// Virtual address of the header.
    vaddr: u64,
    /// File offset of the header.
    offset: usize,
    version: PclnVersion,
    ptr_size: usize,
    quantum: u64,
    words: [u64; HDR_WORDS],
}

impl GoPclnTab {
    /// Finds and parses the pclntab of a Go binary.
    pub fn locate(image: &ElfImage) -> Result<Self, PclnError> {
        let header = find_header(image)?;
        let moduledata = find_moduledata(image, &header);
        let ps = header.ptr_size as u64;
        let pcln_offset = header.words[HDR_PCLN_OFFSET];
        let table_at = |field: usize| -> Result<usize, PclnError> {
            usize::try_from(header.words[field])
                .ok()
                .and_then(|o| header.offset.checked_add(o))
                .filter(|o| *o < image.data().len())
                .ok_or(PclnError::BadHeader(
                    "sub-table offset past the end of the file",
                ))
        };
        let nfunc = usize::try_from(header.words[HDR_NFUNC])
            .map_err(|_| PclnError::BadHeader("function count"))?;
        let mut tab = Self {
            data: image.data().clone(),
            little_endian: image.is_little_endian(),
            version: header.version,
            ptr_size: header.ptr_size,
            quantum: header.quantum,
            nfunc,
            text_start: 0,
            funcnametab: table_at(HDR_FUNCNAME_OFFSET)?,
            cutab: table_at(HDR_CU_OFFSET)?,
            filetab: table_at(HDR_FILETAB_OFFSET)?,
            pctab: table_at(HDR_PCTAB_OFFSET)?,
            pclntab: table_at(HDR_PCLN_OFFSET)?,
            gofunc: None,
            entries: Box::default(),
            buckets: Vec::new(),
            wrapper_id: std::sync::OnceLock::new(),
        };
        let functab_len = nfunc
            .checked_add(1)
            .and_then(|n| n.checked_mul(FUNCTAB_ENTRY_SIZE))
            .ok_or(PclnError::BadHeader("function count"))?;
        if tab
            .pclntab
            .checked_add(functab_len)
            .is_none_or(|end| end > tab.data.len())
        {
            return Err(PclnError::BadHeader(
                "function table past the end of the file",
            ));
        }
        let _ = pcln_offset;
        // Text start: moduledata.text (validated against minpc), else the header field (1.18-1.26,
        // when not left to a relocation), else the `.text` section.
        let first_entry = u64::from(
            tab.functab_entry(0)
                .ok_or(PclnError::BadHeader("functab"))?,
        );
        let md_text = moduledata.and_then(|md| {
            let text = image.read_pointer(md + MD_TEXT * ps)?;
            let minpc = image.read_pointer(md + MD_MINPC * ps)?;
            (text != 0 && minpc == text.wrapping_add(first_entry)).then_some(text)
        });
        let header_text = header.words[HDR_TEXT_START];
        let text_start = md_text
            .or((header_text != 0).then_some(header_text))
            .or_else(|| image.section(".text").map(|s| s.addr))
            .ok_or(PclnError::NoTextStart)?;
        tab.text_start = text_start;
        tab.entries = (0..=nfunc)
            .map(|i| tab.functab_entry(i))
            .collect::<Option<_>>()
            .ok_or(PclnError::BadHeader("functab"))?;
        tab.buckets = tab.build_buckets();
        tab.gofunc = moduledata
            .and_then(|md| find_gofunc(image, md, header.version))
            .and_then(|v| image.vaddr_to_offset(v))
            .and_then(|o| usize::try_from(o).ok());
        Ok(tab)
    }

    /// For each `BUCKET_SIZE` bytes of text, the index of the function covering its start.
    pub(super) fn build_buckets(&self) -> Vec<u32> {
        let Some(end) = self.functab_entry(self.nfunc) else {
            return Vec::new();
        };
        let mut buckets = Vec::with_capacity((end / BUCKET_SIZE) as usize + 1);
        let mut func = 0usize;
        for b in 0..=end / BUCKET_SIZE {
            let start = b * BUCKET_SIZE;
            while func + 1 < self.nfunc && self.functab_entry(func + 1).is_some_and(|e| e <= start)
            {
                func += 1;
            }
            buckets.push(func as u32);
        }
        buckets
    }
}

/// Parses and validates a header at file offset `offset` (virtual address `vaddr`).
pub(super) fn parse_header(image: &ElfImage, offset: usize, vaddr: u64) -> Option<Header> {
    let data = image.data();
    let le = image.is_little_endian();
    let head = data.get(offset..offset.checked_add(HEADER_WORDS_START)?)?;
    let magic = read_uint(&head[..4], le) as u32;
    let version = match magic {
        MAGIC_GO118 => PclnVersion::Go118,
        MAGIC_GO120 => PclnVersion::Go120,
        _ => return None,
    };
    let (pad1, pad2, quantum, ptr_size) = (head[4], head[5], head[6], head[7]);
    if pad1 != 0 || pad2 != 0 || !matches!(quantum, 1 | 2 | 4) || !matches!(ptr_size, 4 | 8) {
        return None;
    }
    let ps = usize::from(ptr_size);
    let mut words = [0u64; HDR_WORDS];
    for (i, w) in words.iter_mut().enumerate() {
        let at = offset + HEADER_WORDS_START + i * ps;
        *w = read_uint(data.get(at..at + ps)?, le);
    }
    // Sub-tables follow the header in a fixed order.
    let order = [
        HDR_FUNCNAME_OFFSET,
        HDR_CU_OFFSET,
        HDR_FILETAB_OFFSET,
        HDR_PCTAB_OFFSET,
        HDR_PCLN_OFFSET,
    ];
    let header_len = (HEADER_WORDS_START + HDR_WORDS * ps) as u64;
    if words[HDR_FUNCNAME_OFFSET] < header_len {
        return None;
    }
    if order.windows(2).any(|w| words[w[0]] > words[w[1]]) {
        return None;
    }
    let nfunc = words[HDR_NFUNC];
    let functab_end = (offset as u64)
        .checked_add(words[HDR_PCLN_OFFSET])?
        .checked_add(
            nfunc
                .checked_add(1)?
                .checked_mul(FUNCTAB_ENTRY_SIZE as u64)?,
        )?;
    if nfunc == 0 || functab_end > data.len() as u64 {
        return None;
    }
    // The function table must be sorted: check its ends and a few entries between.
    let functab = offset + usize::try_from(words[HDR_PCLN_OFFSET]).ok()?;
    let entry = |i: u64| -> Option<u32> {
        let at = functab + usize::try_from(i).ok()? * FUNCTAB_ENTRY_SIZE;
        Some(read_uint(data.get(at..at + 4)?, le) as u32)
    };
    let probes = [0, nfunc / 4, nfunc / 2, nfunc * 3 / 4, nfunc];
    let mut last = 0u32;
    for i in probes {
        let e = entry(i)?;
        if e < last {
            return None;
        }
        last = e;
    }
    Some(Header {
        vaddr,
        offset,
        version,
        ptr_size: ps,
        quantum: u64::from(quantum),
        words,
    })
}

/// Finds the header: `.gopclntab`, then `.go.module`'s first word, then a scan of read-only data.
pub(super) fn find_header(image: &ElfImage) -> Result<Header, PclnError> {
    if let Some(sec) = image.section(".gopclntab")
        && let Some((off, _)) = sec.file_range
    {
        let off = usize::try_from(off).map_err(|_| PclnError::BadHeader("offset"))?;
        return parse_header(image, off, sec.addr).ok_or(PclnError::BadHeader(
            "the .gopclntab section holds no valid Go 1.18+ header",
        ));
    }
    if let Some(sec) = image.section(".go.module")
        && let Some(ptr) = image.read_pointer(sec.addr)
        && let Some(off) = image.vaddr_to_offset(ptr)
        && let Some(h) = usize::try_from(off)
            .ok()
            .and_then(|off| parse_header(image, off, ptr))
    {
        return Ok(h);
    }
    // Scan allocated, non-executable sections (or segments when there are no section headers)
    // for the magic at pointer-aligned offsets.
    let mut ranges: Vec<(u64, u64, u64)> = image
        .sections()
        .iter()
        .filter(|s| s.addr != 0 && !s.is_text)
        .filter_map(|s| s.file_range.map(|(off, len)| (s.addr, off, len)))
        .collect();
    if ranges.is_empty() {
        ranges = image
            .segments()
            .iter()
            .filter(|s| !s.executable)
            .map(|s| (s.vaddr, s.offset, s.file_size))
            .collect();
    }
    let le = image.is_little_endian();
    for (addr, off, len) in ranges {
        let (Ok(start), Ok(len)) = (usize::try_from(off), usize::try_from(len)) else {
            continue;
        };
        let Some(bytes) = image.data().get(start..start.saturating_add(len)) else {
            continue;
        };
        // Align the scan to 8 bytes of virtual address.
        let skew = ((8 - (addr % 8)) % 8) as usize;
        let mut i = skew;
        while i + 8 <= bytes.len() {
            let magic = read_uint(&bytes[i..i + 4], le) as u32;
            if (magic == MAGIC_GO118 || magic == MAGIC_GO120)
                && let Some(h) = parse_header(image, start + i, addr + i as u64)
            {
                return Ok(h);
            }
            i += 8;
        }
    }
    Err(PclnError::NotFound)
}

/// Finds `runtime.firstmoduledata`: `.go.module`, else a word pointing at the header whose next
/// word points at `funcnametab`.
pub(super) fn find_moduledata(image: &ElfImage, header: &Header) -> Option<u64> {
    let ps = header.ptr_size as u64;
    let funcnametab = header.vaddr + header.words[HDR_FUNCNAME_OFFSET];
    let valid = |md: u64| {
        image.read_pointer(md) == Some(header.vaddr)
            && image.read_pointer(md + MD_FUNCNAMETAB * ps) == Some(funcnametab)
    };
    if let Some(sec) = image.section(".go.module")
        && valid(sec.addr)
    {
        return Some(sec.addr);
    }
    // PIE: the pointer is a relocation addend.
    if let Some(md) = image
        .relocated_pointers_to(header.vaddr)
        .into_iter()
        .find(|site| valid(*site))
    {
        return Some(md);
    }
    // Non-PIE: the pointer is stored as is, in a writable data section.
    let le = image.is_little_endian();
    for sec in image.sections() {
        if !matches!(
            sec.name.as_str(),
            ".noptrdata" | ".data" | ".data.rel.ro" | ".go.module"
        ) {
            continue;
        }
        let Some(bytes) = image.section_data(sec) else {
            continue;
        };
        let mut i = ((ps - sec.addr % ps) % ps) as usize;
        while i + ps as usize <= bytes.len() {
            if read_uint(&bytes[i..i + ps as usize], le) == header.vaddr
                && valid(sec.addr + i as u64)
            {
                return Some(sec.addr + i as u64);
            }
            i += ps as usize;
        }
    }
    None
}

/// Reads `moduledata.gofunc`, trying each layout and keeping the one pointing into read-only data
/// at or after `moduledata.rodata`.
pub(super) fn find_gofunc(image: &ElfImage, md: u64, version: PclnVersion) -> Option<u64> {
    let ps = image.pointer_size() as u64;
    let candidates = match version {
        PclnVersion::Go118 => MD_GOFUNC_GO118,
        PclnVersion::Go120 => MD_GOFUNC_GO120,
    };
    candidates.iter().find_map(|&index| {
        let rodata = image.read_pointer(md + (index - 1) * ps)?;
        let gofunc = image.read_pointer(md + index * ps)?;
        let in_readonly = image
            .segments()
            .iter()
            .any(|s| !s.executable && gofunc >= s.vaddr && gofunc - s.vaddr < s.file_size);
        (rodata != 0 && gofunc >= rodata && in_readonly).then_some(gofunc)
    })
}
