package agent

// SetTestHookMigratedIn sets testHookMigratedIn (migrate.go) for a test;
// call it before the agents start, and undo it after they stopped.
func SetTestHookMigratedIn(h func(uid, dir string) bool) { testHookMigratedIn = h }

// SetTestHookIncomingStarted sets testHookIncomingStarted (migrate.go)
// for a test; call it before the agents start, and undo it after they
// stopped.
func SetTestHookIncomingStarted(h func(uid, dir string)) { testHookIncomingStarted = h }

// SetTestHookAdopted sets testHookAdopted (migrateadopt.go) for a test;
// call it before the agents start, and undo it after they stopped.
func SetTestHookAdopted(h func(host string, keys []string)) { testHookAdopted = h }

// WritesInFlight and EventsInFlight are the agent's limits on its
// writes in flight (agent.go), for TestAgentWritesInFlight.
const WritesInFlight, EventsInFlight = writesInFlight, eventsInFlight
