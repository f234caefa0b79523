//! covobs library
