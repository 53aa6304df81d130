package app

import "strings"

// Role is one part of Levee that a process can run.
type Role int

const (
	// RoleSMTP receives mail and publishes it to the queue.
	RoleSMTP Role = 1 << iota
	// RoleWorker drains the queue into the store.
	RoleWorker
	// RoleWeb serves the mailbox API (every process serves /metrics and health).
	RoleWeb

	// RoleAll is `levee serve`.
	RoleAll = RoleSMTP | RoleWorker | RoleWeb
)

func (r Role) String() string {
	var parts []string
	for _, p := range []struct {
		role Role
		name string
	}{{RoleSMTP, "smtpd"}, {RoleWorker, "worker"}, {RoleWeb, "web"}} {
		if r&p.role != 0 {
			parts = append(parts, p.name)
		}
	}
	return strings.Join(parts, "+")
}
