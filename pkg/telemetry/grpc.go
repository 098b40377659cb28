package telemetry

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// GRPCMetrics records per-method call counts and latencies of a gRPC server.
type GRPCMetrics struct {
	started  *prometheus.CounterVec
	duration *prometheus.HistogramVec
}

// NewGRPCMetrics registers, on reg, nhid_<subsystem>_rpc_started_total{method}
// and nhid_<subsystem>_rpc_duration_seconds{method,code}. Registering twice
// on one registry reuses the first collectors; any other registration
// failure is a programming error and panics, as promauto does. A nil reg
// records into collectors nobody gathers.
func NewGRPCMetrics(reg prometheus.Registerer, subsystem string) *GRPCMetrics {
	m := &GRPCMetrics{
		started: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace,
			Subsystem: subsystem,
			Name:      "rpc_started_total",
			Help:      "RPCs started, by full method name.",
		}, []string{"method"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: Namespace,
			Subsystem: subsystem,
			Name:      "rpc_duration_seconds",
			Help:      "Time from the start of an RPC to the handler's return, by method and status code.",
			Buckets:   []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
		}, []string{"method", "code"}),
	}
	m.started = RegisterOrExisting(reg, m.started)
	m.duration = RegisterOrExisting(reg, m.duration)
	return m
}

// RegisterOrExisting registers c on reg and returns it, or the collector
// already registered under the same description. A nil reg returns c
// unregistered. Other registration errors panic: they are programming errors.
func RegisterOrExisting[C prometheus.Collector](reg prometheus.Registerer, c C) C {
	if reg == nil {
		return c
	}
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing
			}
		}
		panic(err)
	}
	return c
}

// UnaryServerInterceptor records unary RPCs.
func (m *GRPCMetrics) UnaryServerInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		start := time.Now()
		m.started.WithLabelValues(info.FullMethod).Inc()
		resp, err := handler(ctx, req)
		m.observe(info.FullMethod, err, start)
		return resp, err
	}
}

// StreamServerInterceptor records streaming RPCs; the duration is the
// stream's whole life.
func (m *GRPCMetrics) StreamServerInterceptor() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		start := time.Now()
		m.started.WithLabelValues(info.FullMethod).Inc()
		err := handler(srv, ss)
		m.observe(info.FullMethod, err, start)
		return err
	}
}

func (m *GRPCMetrics) observe(method string, err error, start time.Time) {
	m.duration.WithLabelValues(method, status.Code(err).String()).Observe(time.Since(start).Seconds())
}

// LoggingInterceptors log every finished RPC once, with its method, status
// code, duration and peer address: at debug for OK, at warn for Internal
// and Unknown (failures of the server itself), at info otherwise. They also
// put a per-request logger, carrying the method, in the context (see
// Logger), so handlers log with the same fields.
func LoggingInterceptors(log *slog.Logger) (grpc.UnaryServerInterceptor, grpc.StreamServerInterceptor) {
	log = OrDiscard(log)
	unary := func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		start := time.Now()
		reqLog := requestLogger(ctx, log, info.FullMethod)
		resp, err := handler(ContextWithLogger(ctx, reqLog), req)
		logFinished(ctx, reqLog, err, start)
		return resp, err
	}
	stream := func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		start := time.Now()
		ctx := ss.Context()
		reqLog := requestLogger(ctx, log, info.FullMethod)
		err := handler(srv, &contextStream{ServerStream: ss, ctx: ContextWithLogger(ctx, reqLog)})
		logFinished(ctx, reqLog, err, start)
		return err
	}
	return unary, stream
}

func requestLogger(ctx context.Context, log *slog.Logger, method string) *slog.Logger {
	args := []any{Method, method}
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		args = append(args, Address, p.Addr.String())
	}
	return log.With(args...)
}

func logFinished(ctx context.Context, log *slog.Logger, err error, start time.Time) {
	code := status.Code(err)
	level := slog.LevelInfo
	switch code {
	case codes.OK:
		level = slog.LevelDebug
	case codes.Internal, codes.Unknown:
		level = slog.LevelWarn
	}
	if !log.Enabled(ctx, level) {
		return
	}
	attrs := []slog.Attr{
		slog.String(Code, code.String()),
		slog.Duration(Duration, time.Since(start)),
	}
	if err != nil {
		attrs = append(attrs, slog.String(Error, status.Convert(err).Message()))
	}
	log.LogAttrs(ctx, level, "rpc finished", attrs...)
}

// contextStream replaces a server stream's context, the only way a stream
// interceptor can hand values to the handler.
type contextStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *contextStream) Context() context.Context { return s.ctx }
