package otel_test

import (
	"bufio"
	"context"
	"fmt"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"

	"github.com/seed-c59d106d/pgnotify"
	pgotel "github.com/seed-c59d106d/pgnotify/otel"
)

// Serve a Manager's metrics to Prometheus through OpenTelemetry's
// Prometheus exporter. A real program serves the handler on its own
// address (http.ListenAndServe(":9464", handler)); here a test server
// stands in, and one scrape is printed.
func Example_prometheus() {
	ctx := context.Background()
	registry := prometheus.NewRegistry()
	exporter, err := otelprom.New(otelprom.WithRegisterer(registry))
	if err != nil {
		log.Fatal(err)
	}
	provider := sdkmetric.NewMeterProvider(sdkmetric.WithReader(exporter))
	defer provider.Shutdown(ctx)

	m := pgnotify.NewManager()
	defer m.Close(ctx)
	reg, err := pgotel.RegisterManager(m, pgotel.WithMeterProvider(provider))
	if err != nil {
		log.Fatal(err)
	}
	defer reg.Unregister()

	conn, err := pgx.Connect(ctx, connString) // your server's URL
	if err != nil {
		log.Fatal(err)
	}
	if err := pgnotify.Listen(ctx, conn, "orders"); err != nil {
		log.Fatal(err)
	}
	if err := m.Add(ctx, conn); err != nil {
		log.Fatal(err)
	}

	srv := httptest.NewServer(promhttp.HandlerFor(registry, promhttp.HandlerOpts{}))
	defer srv.Close()
	resp, err := http.Get(srv.URL)
	if err != nil {
		log.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "pgnotify_connections{") && strings.Contains(line, `pgnotify_connection_state="live"`) {
			fmt.Println("live connections:", line[strings.LastIndex(line, " ")+1:])
		}
	}
	// Output:
	// live connections: 1
}
