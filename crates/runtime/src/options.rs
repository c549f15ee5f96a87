//! How a graph is executed: the choices that change a result (integer numerics) or
//! only its speed (kernels). Carried explicitly by every executor and every node
//! context; nothing in the runtime reads a process-wide switch or the environment, so
//! two sessions with different numerics run side by side in one process (tests do).

use crate::kernels::fast::Kernels;
use crate::kernels::quantized::Numerics;

/// The execution options of a session, the stateless executor or one node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExecOptions {
    /// Which runtime's integer results to reproduce bit for bit.
    pub numerics: Numerics,
    /// Which kernels run (results do not depend on it: every fast kernel is
    /// bit-exact with the reference kernel under the same numerics).
    pub kernels: Kernels,
}

impl Default for ExecOptions {
    /// LiteRT's builtin numerics on the best kernels of this CPU.
    fn default() -> Self {
        ExecOptions {
            numerics: Numerics::LiteRt,
            kernels: Kernels::native(),
        }
    }
}

impl ExecOptions {
    /// The default options with the given numerics.
    pub fn numerics(numerics: Numerics) -> Self {
        ExecOptions {
            numerics,
            ..Default::default()
        }
    }

    /// `self` with the given kernels.
    pub fn with_kernels(self, kernels: Kernels) -> Self {
        ExecOptions { kernels, ..self }
    }
}
