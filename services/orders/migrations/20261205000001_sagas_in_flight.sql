-- The sagas still waiting, for the in-flight metrics and the operations console: a partial
-- index, so reading them costs what is in flight, not every order ever placed.
CREATE INDEX sagas_in_flight ON sagas (step) WHERE step IN ('reserving', 'authorizing', 'committing', 'compensating');
