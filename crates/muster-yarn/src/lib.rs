//! muster-yarn: Dask on Hadoop YARN through the ResourceManager's REST APIs
//! only (no JVM on the client). One YARN service per cluster (the Services
//! API, Hadoop >= 3.1; tested on 3.4.2): a `scheduler` component of one
//! container and a `worker` component whose instance names are the Dask
//! worker names, so muster retires exactly the workers it then decommissions.
//! It owns the `backend:` options of `kind: yarn`, the pure rendering of the
//! service JSON, the parsers of the RM/NM answers, a typed REST client and
//! the backend built on them. It knows nothing of other cluster managers.

pub mod backend;
pub mod client;
pub mod error;
pub mod model;
pub mod ops;
pub mod options;
pub mod service;

pub use backend::YarnBackend;
pub use client::YarnClient;
pub use error::YarnError;
pub use ops::YarnOps;
pub use options::{ResourceManagers, YarnOptions};
