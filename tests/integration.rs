//! flowd's one integration-test binary (ripgrep's `autotests = false` layout): each
//! area is a module.

mod marker;
