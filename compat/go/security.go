package main

import (
	"crypto/tls"
	"crypto/x509"
	"os"
	"strings"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"
)

// securityOpts gives every client of a scenario the security the environment asks for
// (compat/tests/test_security.py and test_scram.py), so the scenarios themselves stay
// the same over any listener:
//
//	FRANZGO_TLS_CA      PEM CA bundle: connect with TLS and check the broker against it
//	FRANZGO_TLS_CERT    PEM client certificate (with FRANZGO_TLS_KEY): mTLS
//	FRANZGO_TLS_KEY     its PEM private key
//	FRANZGO_SASL        MECHANISM:USER:PASSWORD, MECHANISM one of PLAIN, SCRAM-SHA-256,
//	                    SCRAM-SHA-512
func securityOpts() []kgo.Opt {
	var opts []kgo.Opt
	if ca := os.Getenv("FRANZGO_TLS_CA"); ca != "" {
		pem, err := os.ReadFile(ca)
		must(err, "read FRANZGO_TLS_CA")
		roots := x509.NewCertPool()
		if !roots.AppendCertsFromPEM(pem) {
			fail("no certificate in %s", ca)
		}
		cfg := &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
		if cert := os.Getenv("FRANZGO_TLS_CERT"); cert != "" {
			pair, err := tls.LoadX509KeyPair(cert, os.Getenv("FRANZGO_TLS_KEY"))
			must(err, "load FRANZGO_TLS_CERT and FRANZGO_TLS_KEY")
			cfg.Certificates = []tls.Certificate{pair}
		}
		opts = append(opts, kgo.DialTLSConfig(cfg))
	}
	if spec := os.Getenv("FRANZGO_SASL"); spec != "" {
		parts := strings.SplitN(spec, ":", 3)
		if len(parts) != 3 {
			fail("FRANZGO_SASL is MECHANISM:USER:PASSWORD")
		}
		mechanism, user, pass := parts[0], parts[1], parts[2]
		auth := scram.Auth{User: user, Pass: pass}
		switch mechanism {
		case "PLAIN":
			opts = append(opts, kgo.SASL(plain.Auth{User: user, Pass: pass}.AsMechanism()))
		case "SCRAM-SHA-256":
			opts = append(opts, kgo.SASL(auth.AsSha256Mechanism()))
		case "SCRAM-SHA-512":
			opts = append(opts, kgo.SASL(auth.AsSha512Mechanism()))
		default:
			fail("unknown SASL mechanism %s", mechanism)
		}
	}
	return opts
}
