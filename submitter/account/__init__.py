"""What submitter needs once per account and region: `init` sets it up, `doctor` checks it."""
