// Package natstmp runs a throwaway NATS server with JetStream inside the
// current process, on a free loopback port, storing in a directory of its
// own, for tests, examples and benchmarks. Only those import it, so the
// NATS server never enters a program built from the library.
package natstmp

import (
	"errors"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// A Server is a running embedded NATS server. Restart keeps its port and
// its JetStream store.
type Server struct {
	opts *server.Options
	srv  *server.Server
	dir  string
	own  bool // dir was made by Start and is removed by Stop
}

// Start starts a server with JetStream storing under dir (a new temporary
// directory when dir is ""), on a free loopback port.
func Start(dir string) (*Server, error) {
	s := &Server{dir: dir}
	if dir == "" {
		d, err := os.MkdirTemp("", "natstmp-")
		if err != nil {
			return nil, err
		}
		s.dir, s.own = d, true
	}
	s.opts = &server.Options{
		Host:      "127.0.0.1",
		Port:      server.RANDOM_PORT,
		JetStream: true,
		StoreDir:  s.dir,
		NoLog:     true,
		NoSigs:    true,
	}
	if err := s.start(); err != nil {
		s.removeDir()
		return nil, err
	}
	// A restart listens where the first server did.
	s.opts.Port = s.srv.Addr().(*net.TCPAddr).Port
	return s, nil
}

func (s *Server) start() error {
	srv, err := server.NewServer(s.opts)
	if err != nil {
		return fmt.Errorf("natstmp: %w", err)
	}
	srv.Start()
	if !srv.ReadyForConnections(30 * time.Second) {
		srv.Shutdown()
		srv.WaitForShutdown()
		return errors.New("natstmp: the NATS server did not become ready within 30s")
	}
	s.srv = srv
	return nil
}

// URL returns the nats:// URL clients connect to.
func (s *Server) URL() string {
	return fmt.Sprintf("nats://127.0.0.1:%d", s.opts.Port)
}

// Shutdown stops the server, keeping its store for Start again.
func (s *Server) Shutdown() {
	if s.srv != nil {
		s.srv.Shutdown()
		s.srv.WaitForShutdown()
		s.srv = nil
	}
}

// Restart stops the server and starts it again on the same port with the
// same store: clients reconnect and JetStream streams come back.
func (s *Server) Restart() error {
	s.Shutdown()
	return s.start()
}

// Stop stops the server and removes the store Start created.
func (s *Server) Stop() {
	s.Shutdown()
	s.removeDir()
}

func (s *Server) removeDir() {
	if s.own {
		_ = os.RemoveAll(s.dir)
	}
}
