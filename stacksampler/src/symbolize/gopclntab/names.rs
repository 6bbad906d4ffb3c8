//! Function and file names: C strings of the name and file tables, and names as Go prints
//! them.

use super::*;

impl GoPclnTab {
    /// The printed name at `name_off` (borrowed from the file unless it is a generic
    /// instantiation, printed as `[...]`).
    pub(super) fn printed_name(&self, name_off: u32) -> Option<Cow<'_, str>> {
        let (raw, bracket) = self.cstr_scan(self.funcnametab.checked_add(name_off as usize)?)?;
        Some(if bracket {
            name_for_print_cow(raw)
        } else {
            Cow::Borrowed(raw)
        })
    }

    /// The name of the (outermost, real) function containing `pc`.
    pub fn function_name_at(&self, pc: u64) -> Option<String> {
        let (_, func) = self.find_func(pc)?;
        self.function_name(func.name_off)
    }

    /// The address range `[entry, end)` of the function named `name` exactly as the table
    /// spells it (`runtime.allgadd`): a linear scan of the function table, for the few lookups by
    /// name a run needs.
    pub fn function_range(&self, name: &str) -> Option<(u64, u64)> {
        (0..self.nfunc).find_map(|index| {
            let func = self.func_record(index)?;
            let raw = self.cstr(self.funcnametab.checked_add(func.name_off as usize)?)?;
            if raw != name {
                return None;
            }
            let end = self.text_start + u64::from(*self.entries.get(index + 1)?);
            Some((func.entry, end))
        })
    }

    pub(super) fn function_name(&self, name_off: u32) -> Option<String> {
        let raw = self.cstr(self.funcnametab.checked_add(name_off as usize)?)?;
        Some(name_for_print(raw))
    }

    pub(super) fn cstr(&self, at: usize) -> Option<&str> {
        self.cstr_scan(at).map(|(s, _)| s)
    }

    /// The NUL-terminated UTF-8 string at `at`, and whether it holds a `[` (one pass over the
    /// bytes; strings of ASCII, the norm, are validated by that same pass).
    #[inline]
    pub(super) fn cstr_scan(&self, at: usize) -> Option<(&str, bool)> {
        let rest = self.data.get(at..)?;
        let mut high = 0u8;
        let mut bracket = false;
        let len = rest.iter().position(|&b| {
            high |= b;
            bracket |= b == b'[';
            b == 0
        })?;
        let bytes = &rest[..len];
        let text = if high < 0x80 {
            // SAFETY: every byte is below 0x80, so the bytes are ASCII, which is valid UTF-8.
            unsafe { std::str::from_utf8_unchecked(bytes) }
        } else {
            std::str::from_utf8(bytes).ok()?
        };
        Some((text, bracket))
    }
}

/// The runtime's `funcNameForPrint`: type arguments of generic instantiations print as `[...]`.
pub fn name_for_print(raw: &str) -> String {
    name_for_print_cow(raw).into_owned()
}

/// [`name_for_print`], borrowing `raw` when it prints as is.
pub fn name_for_print_cow(raw: &str) -> Cow<'_, str> {
    if let Some(open) = raw.find('[')
        && let Some(close) = raw.rfind(']')
        && open < close
    {
        return Cow::Owned(format!("{}[...]{}", &raw[..open], &raw[close + 1..]));
    }
    Cow::Borrowed(raw)
}
