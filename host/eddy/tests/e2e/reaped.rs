//! A child process of a test, killed and reaped when dropped, so a failed assertion leaves no
//! process behind.

use std::ops::{Deref, DerefMut};
use std::process::{Child, Output};

/// A running child process; see the module docs.
pub(crate) struct Reaped(Option<Child>);

impl Reaped {
    /// Takes charge of `child`.
    pub(crate) fn new(child: Child) -> Reaped {
        Reaped(Some(child))
    }

    /// Kills the process (`kill -9`) and returns what it wrote to its pipes.
    pub(crate) fn output(&mut self) -> Output {
        let mut child = self.0.take().expect("still running");
        child.kill().unwrap();
        child.wait_with_output().unwrap()
    }
}

impl Deref for Reaped {
    type Target = Child;

    fn deref(&self) -> &Child {
        self.0.as_ref().expect("still running")
    }
}

impl DerefMut for Reaped {
    fn deref_mut(&mut self) -> &mut Child {
        self.0.as_mut().expect("still running")
    }
}

impl Drop for Reaped {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
