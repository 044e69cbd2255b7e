"""The job's node coordinator: an Academy agent that moves nodes between live Directors.

It runs next to the Directors (launched by the same Manager), asks each for
its load over the exchange, decides moves with
[`plan_moves`][actors.coordinator.policy.plan_moves], and carries each out by
asking the giver to release a node and the receiver to adopt it; every
Director only ever touches its own DFK. Moves are journaled
([`MoveJournal`][actors.store.moves.MoveJournal]).
"""
