//! `shmimage info`: the segment's state as JSON, exactly what `GET /api/segment` answers (the
//! process that answers, listed with `"is_self": true`, is `shmimage info` itself).

use super::{Outcome, attach_to_read, detach, print_line};
use crate::config::InfoArgs;
use crate::json::SegmentJson;

/// Runs `shmimage info`.
pub fn run(args: &InfoArgs) -> Outcome {
    let name = &args.segment.segment;
    let segment = attach_to_read(name, "info")?;
    let state = segment.state();
    detach(segment)?;
    let state = state.map_err(|error| error.to_string())?;
    let json = serde_json::to_string_pretty(&SegmentJson::from(state))
        .map_err(|error| format!("cannot write the segment's state as JSON: {error}"))?;
    print_line(&json)
}
