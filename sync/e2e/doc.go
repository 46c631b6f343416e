// Package e2e tests sync with the real binaries: edged appending under load
// and killed with SIGKILL, cityhub on bbolt and on PostgreSQL, enrolment
// and the CSV commands as an operator runs them.
package e2e
