//! The runtimes labels attribute, and what a module's counters are for each: per module, a
//! reader ([`super::source::Source`]) turns each artifact into a state of its process
//! instance's counters; the count model does the rest the same way for all of them.

/// A coverage runtime whose artifacts labels attribute.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Runtime {
    Llvm,
    Gcov,
    Bisect,
    Sancov,
    Kcov,
}

/// What the indices of a module's hit maps are (docs/labels.md, "hit maps").
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Keys {
    /// Counter indices: LLVM's counters in profile order, gcov's arc counters (the .gcda files
    /// in the order the session first held them, each in file order), bisect_ppx's points (the
    /// instrumented files in that order, each in point order).
    #[default]
    Counter,
    /// Module-relative PCs (SanitizerCoverage edges).
    ModulePc,
    /// Kernel PCs (kcov).
    KernelPc,
}

impl Keys {
    /// Its code in the hit map files.
    pub fn code(self) -> u8 {
        match self {
            Self::Counter => 0,
            Self::ModulePc => 1,
            Self::KernelPc => 2,
        }
    }

    pub fn from_code(c: u8) -> Option<Self> {
        match c {
            0 => Some(Self::Counter),
            1 => Some(Self::ModulePc),
            2 => Some(Self::KernelPc),
            _ => None,
        }
    }
}

impl Runtime {
    /// The runtime of an artifact's metadata (`runtime`); None for one labels do not know.
    pub fn of(name: &str) -> Option<Self> {
        match name {
            "llvm" => Some(Self::Llvm),
            "gcov" => Some(Self::Gcov),
            "bisect" => Some(Self::Bisect),
            "sancov" => Some(Self::Sancov),
            "kcov" => Some(Self::Kcov),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Llvm => "llvm",
            Self::Gcov => "gcov",
            Self::Bisect => "bisect",
            Self::Sancov => "sancov",
            Self::Kcov => "kcov",
        }
    }

    pub fn keys(self) -> Keys {
        match self {
            Self::Llvm | Self::Gcov | Self::Bisect => Keys::Counter,
            Self::Sancov => Keys::ModulePc,
            Self::Kcov => Keys::KernelPc,
        }
    }
}
