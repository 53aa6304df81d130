package layout

// module is the path every Levee import starts with. deploy/ is a module of
// its own and is not listed by `go list ./...` from the root.
const module = "github.com/levee-mail/levee"

// rule places Levee packages in the layout. Paths are relative to the module;
// in may and never, "x/..." means x and every package below it.
type rule struct {
	pkgs   []string // the packages the rule governs, exactly: a new package needs a rule
	may    []string // the Levee packages they may import (a package may always import itself)
	never  []string // imports the design names as forbidden; also enforced by may, listed for the message
	helper bool     // a test helper: only _test.go files may import it
	why    string   // the rule, quoted when it fails
}

// rules is the layout, top of the data flow first.
var rules = []rule{
	{
		pkgs: []string{"cmd/levee"},
		may:  []string{"app", "ingest", "worker", "web/...", "queue/...", "store/...", "loadtest", "mail", "internal/..."},
		why:  "the binary: flags, main and the CLI subcommands; it may import anything below it, and, per style.md, nothing imports cmd/...",
	},
	{
		pkgs:  []string{"app"},
		may:   []string{"ingest", "worker", "web/...", "queue/...", "store/...", "mail", "internal/..."},
		never: []string{"cmd/...", "loadtest"},
		why:   "the application: wires the roles together; only cmd/... imports it",
	},
	{
		pkgs:   []string{"app/apptest"},
		may:    []string{"app"},
		helper: true,
		why:    "test helpers that start a whole Levee: for the _test.go files of app and cmd/... only",
	},

	// The stages, in the order mail flows through them.
	{
		pkgs:  []string{"ingest"},
		may:   []string{"queue", "mail", "internal/..."},
		never: []string{"store/...", "worker", "web/...", "app", "queue/admin", "loadtest"},
		why:   `the SMTP receiver: its publisher is the queue and its replies come from queue's publish errors; design.md: "ingest never imports store"`,
	},
	{
		pkgs:  []string{"queue"},
		may:   []string{"queue/natsserver", "mail", "internal/..."},
		never: []string{"ingest", "worker", "store/...", "web/...", "app", "queue/admin", "queue/fleet", "loadtest"},
		why:   "the JetStream transport between ingest and worker: it knows messages, not the stages on either side of it",
	},
	{
		pkgs: []string{"queue/natsserver"},
		may:  []string{"internal/..."},
		why:  "the embedded nats-server: no Levee imports but internal helpers",
	},
	{
		pkgs: []string{"queue/fleet"},
		may:  []string{"internal/..."},
		why:  "process stats over NATS: no Levee imports but internal helpers",
	},
	{
		pkgs:  []string{"queue/admin"},
		may:   []string{"queue", "queue/fleet", "mail", "internal/..."},
		never: []string{"ingest", "worker", "store/...", "web/...", "app"},
		why:   "the operator's queue tools, limits, freeze and dead letters: they act on the queue only",
	},
	{
		pkgs:   []string{"queue/queuetest"},
		may:    []string{"queue", "mail"},
		helper: true,
		why:    "test helpers that open real queues: for _test.go files only",
	},
	{
		pkgs:  []string{"worker"},
		may:   []string{"queue", "store", "mail", "internal/..."},
		never: []string{"ingest", "web/...", "app", "queue/admin"},
		why:   `drains the queue into the store through store's interface; design.md: "worker never imports ingest"`,
	},
	{
		pkgs:  []string{"store", "store/sqlite", "store/postgres"},
		may:   []string{"store", "mail", "internal/..."},
		never: []string{"queue/...", "ingest", "worker", "web/...", "app"},
		why:   "mailbox storage and its backends: the bottom of the flow, it knows nothing of how mail arrives",
	},
	{
		pkgs:   []string{"store/storetest", "store/postgres/pgtest"},
		may:    []string{"store", "mail", "internal/..."},
		never:  []string{"queue/...", "ingest", "worker", "web/...", "app"},
		helper: true,
		why:    "the store conformance suite and a private PostgreSQL for tests: the backends' _test.go files import them, production code never",
	},
	{
		pkgs:  []string{"web"},
		may:   []string{"web/opsdoc", "store", "queue/admin", "queue/fleet", "queue", "mail", "internal/..."},
		never: []string{"ingest", "worker", "app"},
		why:   "the HTTP read side and ops API: reads the store and operates the queue through queue/admin, with queue and queue/fleet for their types",
	},
	{
		pkgs:  []string{"web/opsclient"},
		may:   []string{"web", "web/opsdoc", "store", "queue/admin", "queue/fleet", "queue", "mail", "internal/..."},
		never: []string{"ingest", "worker", "app"},
		why:   "a client of web's ops API: speaks web's and queue/admin's types",
	},
	{
		pkgs:  []string{"web/opsdoc"},
		may:   []string{"queue/admin", "queue", "internal/..."},
		never: []string{"ingest", "worker", "app", "store/...", "web"},
		why:   "the ops API's JSON documents, shared by the server (web), its client (web/opsclient) and the CLI",
	},
	{
		pkgs:  []string{"loadtest"},
		may:   []string{"internal/bytesize"},
		never: []string{"ingest", "queue/...", "worker", "store/...", "web/...", "app", "mail"},
		why:   `design.md: "loadtest talks to a running system only over SMTP and HTTP"`,
	},

	// Leaves.
	{
		pkgs: []string{"mail"},
		why:  "the shared mail types: the bottom of every import chain, it imports no Levee package",
	},
	{
		pkgs: []string{"internal/config"},
		may:  []string{"internal/bytesize"},
		why:  "the configuration key table read from struct tags: a leaf that reads sizes through internal/bytesize",
	},
	{
		pkgs: []string{"internal/bytesize", "internal/redact", "internal/diskspace", "internal/baseline"},
		why:  "leaf helpers used across the tree: they import no Levee package",
	},
	{
		pkgs:   []string{"internal/testcert"},
		helper: true,
		why:    "certificates for tests (a CA and what it signs): for _test.go files only, importing no Levee package",
	},
	{
		pkgs: []string{"internal/layout"},
		why:  "this test: it reads the tree through go list and imports no Levee package",
	},
}
