"""Learning from users: graded answers vote on the documents they cited (document priors), stored good answers
vote for their sources when a similar question comes (associations), and verified answers are served again (the
cache). Every record is checked against the vector store before use: a changed or pruned source voids it."""
