//! The guest memory agent's report and its wire encoding (skeleton; filled in
//! by the agent work).
