package telemetry

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
)

func TestNewLogger(t *testing.T) {
	tests := []struct {
		level, format string
		wantErr       string
		logsDebug     bool
		json          bool
	}{
		{level: "debug", format: "text", logsDebug: true},
		{level: "info", format: "json", json: true},
		{level: "", format: ""},
		{level: "WARN", format: "JSON", json: true},
		{level: "error", format: "text"},
		{level: "verbose", format: "text", wantErr: `log level "verbose" is not one of debug, info, warn, error`},
		{level: "info", format: "xml", wantErr: `log format "xml" is not one of text, json`},
	}
	for _, tt := range tests {
		t.Run(tt.level+"/"+tt.format, func(t *testing.T) {
			var buf bytes.Buffer
			log, err := NewLogger(&buf, tt.level, tt.format)
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr {
					t.Fatalf("NewLogger error = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("NewLogger: %v", err)
			}
			log.Debug("dbg")
			log.Error("boom", SPIFFEID, "spiffe://example.org/a")
			out := buf.String()
			if got := strings.Contains(out, "dbg"); got != tt.logsDebug {
				t.Errorf("debug line logged = %v, want %v; output:\n%s", got, tt.logsDebug, out)
			}
			last := strings.TrimSpace(out[strings.LastIndex(strings.TrimSpace(out), "\n")+1:])
			var m map[string]any
			isJSON := json.Unmarshal([]byte(last), &m) == nil
			if isJSON != tt.json {
				t.Errorf("JSON output = %v, want %v; line: %s", isJSON, tt.json, last)
			}
			if !strings.Contains(last, "spiffe://example.org/a") {
				t.Errorf("error line lacks its attribute: %s", last)
			}
		})
	}
}

func TestLogger_FallsBackWithoutARequestLogger(t *testing.T) {
	var buf bytes.Buffer
	base := slog.New(slog.NewTextHandler(&buf, nil))
	if got := Logger(context.Background(), base); got != base {
		t.Error("Logger without a request logger did not return the fallback")
	}
	req := base.With(Method, "/x")
	if got := Logger(ContextWithLogger(context.Background(), req), base); got != req {
		t.Error("Logger did not return the request logger")
	}
	Logger(context.Background(), nil).Info("dropped") // must not panic
}

// syncBuffer is a log sink the gRPC server goroutines write to concurrently.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func startHealthServer(t *testing.T, reg prometheus.Registerer, log *slog.Logger) healthpb.HealthClient {
	t.Helper()
	m := NewGRPCMetrics(reg, "test")
	lu, ls := LoggingInterceptors(log)
	srv := grpc.NewServer(
		grpc.ChainUnaryInterceptor(m.UnaryServerInterceptor(), lu),
		grpc.ChainStreamInterceptor(m.StreamServerInterceptor(), ls),
	)
	hs := health.NewServer()
	hs.SetServingStatus("known", healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(srv, hs)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return healthpb.NewHealthClient(conn)
}

func TestGRPCInterceptors_RecordAndLogEveryFinishedRPC(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	var logs syncBuffer
	client := startHealthServer(t, reg, slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	if _, err := client.Check(ctx, &healthpb.HealthCheckRequest{Service: "known"}); err != nil {
		t.Fatalf("Check(known): %v", err)
	}
	_, err := client.Check(ctx, &healthpb.HealthCheckRequest{Service: "unknown"})
	if status.Code(err) != codes.NotFound {
		t.Fatalf("Check(unknown) = %v, want NotFound", err)
	}
	streamCtx, stopStream := context.WithCancel(ctx)
	watch, err := client.Watch(streamCtx, &healthpb.HealthCheckRequest{Service: "known"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := watch.Recv(); err != nil {
		t.Fatalf("Watch.Recv: %v", err)
	}
	stopStream()

	const check, watchM = "/grpc.health.v1.Health/Check", "/grpc.health.v1.Health/Watch"
	waitFor(t, func() bool {
		return testutil.CollectAndCount(reg, "nhid_test_rpc_duration_seconds") == 3
	})
	if got := testutil.ToFloat64(counter(t, reg, check)); got != 2 {
		t.Errorf("started{%s} = %v, want 2", check, got)
	}
	if err := testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP nhid_test_rpc_started_total RPCs started, by full method name.
# TYPE nhid_test_rpc_started_total counter
nhid_test_rpc_started_total{method="/grpc.health.v1.Health/Check"} 2
nhid_test_rpc_started_total{method="/grpc.health.v1.Health/Watch"} 1
`), "nhid_test_rpc_started_total"); err != nil {
		t.Error(err)
	}
	waitFor(t, func() bool { return strings.Count(logs.String(), "rpc finished") == 3 })
	out := logs.String()
	for _, want := range []string{
		`level=DEBUG msg="rpc finished" method=` + check + ` address=127.0.0.1:`,
		`level=INFO msg="rpc finished" method=` + check,
		"code=NotFound",
		"method=" + watchM,
		"code=Canceled",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("logs lack %q:\n%s", want, out)
		}
	}
}

func counter(t *testing.T, reg prometheus.Registerer, method string) prometheus.Collector {
	t.Helper()
	m := NewGRPCMetrics(reg, "test") // reuses the registered collectors
	return m.started.WithLabelValues(method)
}

func TestLoggingInterceptors_LevelFollowsTheCode(t *testing.T) {
	tests := []struct {
		err       error
		wantLevel string
	}{
		{nil, "DEBUG"},
		{status.Error(codes.PermissionDenied, "node banned"), "INFO"},
		{status.Error(codes.Internal, "disk on fire"), "WARN"},
		{errors.New("plain error"), "WARN"},
	}
	for _, tt := range tests {
		t.Run(status.Code(tt.err).String(), func(t *testing.T) {
			var buf bytes.Buffer
			unary, _ := LoggingInterceptors(slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})))
			var sawLogger bool
			_, _ = unary(context.Background(), nil, &grpc.UnaryServerInfo{FullMethod: "/svc/M"},
				func(ctx context.Context, _ any) (any, error) {
					_, sawLogger = ctx.Value(loggerKey{}).(*slog.Logger)
					return nil, tt.err
				})
			if !sawLogger {
				t.Error("handler context has no request logger")
			}
			var rec map[string]any
			if err := json.Unmarshal(buf.Bytes(), &rec); err != nil {
				t.Fatalf("want exactly one JSON log line, got %q: %v", buf.String(), err)
			}
			got := map[string]any{"level": rec["level"], "method": rec["method"], "code": rec["code"]}
			want := map[string]any{"level": tt.wantLevel, "method": "/svc/M", "code": status.Code(tt.err).String()}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("log record mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestNewHTTPHandler(t *testing.T) {
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "nhid_probe_total", Help: "probe"})
	reg.MustRegister(c)
	c.Inc()
	var mu sync.Mutex
	readyErr := errors.New("store not open")
	ready := func() error { mu.Lock(); defer mu.Unlock(); return readyErr }
	srv := httptest.NewServer(NewHTTPHandler(reg, ready))
	t.Cleanup(srv.Close)

	check := func(path string, wantCode int, wantBody string) {
		t.Helper()
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != wantCode || !strings.Contains(string(body), wantBody) {
			t.Errorf("GET %s = %d %q, want %d containing %q", path, resp.StatusCode, body, wantCode, wantBody)
		}
	}
	check("/healthz", http.StatusOK, "ok")
	check("/readyz", http.StatusServiceUnavailable, "not ready: store not open")
	check("/metrics", http.StatusOK, "nhid_probe_total 1")
	check("/nothing", http.StatusNotFound, "")
	mu.Lock()
	readyErr = nil
	mu.Unlock()
	check("/readyz", http.StatusOK, "ready")
}

func TestRegisterOrExisting_NilRegistryKeepsTheCollector(t *testing.T) {
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "x_total", Help: "x"})
	if got := RegisterOrExisting[prometheus.Counter](nil, c); got != c {
		t.Error("RegisterOrExisting(nil) did not return the collector")
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 10s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
