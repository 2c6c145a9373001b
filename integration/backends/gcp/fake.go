// Package gcp is a fake of Google Cloud Secret Manager's gRPC API, for the
// integration tests: the real client library (and secretfs's gcp provider,
// in its own process) talk to it over a loopback socket, in plaintext.
//
// It serves one project's secrets from memory, as the service documents
// them: CreateSecret, AddSecretVersion (versions numbered from 1),
// AccessSecretVersion ("latest" is the most recently created version, in
// whatever state; a disabled version is FAILED_PRECONDITION, a destroyed one
// too, a missing one NOT_FOUND) with the payload's data_crc32c,
// Disable/Enable/DestroySecretVersion, DeleteSecret, GetSecret and
// ListSecrets with page tokens (page size 25 by default, at most 25,000).
// A test can make every call fail with a code (Fail: UNAVAILABLE for an
// outage, RESOURCE_EXHAUSTED for throttling, PERMISSION_DENIED), corrupt a
// secret's checksum, count calls by method, and stop and start the server
// on the same port.
//
// It does not cover: IAM (every caller may do everything), regions and
// replication, CMEK, etags, expiry and rotation schedules, labels and
// annotations filters, version aliases, the REST transport, quotas as
// numbers (throttling is on or off), and the real service's latencies.
package gcp

import (
	"context"
	"crypto/tls"
	"fmt"
	"hash/crc32"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"cloud.google.com/go/secretmanager/apiv1/secretmanagerpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Fake is the service. Start serves it.
type Fake struct {
	secretmanagerpb.UnimplementedSecretManagerServiceServer
	Project string
	// MaxPage, when set, bounds a ListSecrets page below the service's
	// 25,000, so that a test sees page tokens.
	MaxPage int

	mu      sync.Mutex
	secrets map[string]*secret // guarded by mu; by id
	fail    codes.Code         // guarded by mu; every call fails with it when not OK
	calls   map[string]int     // guarded by mu; by method
	corrupt map[string]bool    // guarded by mu; ids whose checksum is wrong
	srv     *grpc.Server       // guarded by mu
	addr    string             // guarded by mu

	// Identities (federation.go).
	checkTokens   bool                       // guarded by mu; StartTLS: calls need a token the fake issued
	cert          *tls.Certificate           // guarded by mu
	caPEM         []byte                     // guarded by mu
	pool          string                     // guarded by mu; the trusted pool provider
	poolAudience  string                     // guarded by mu; its tokens' audience
	tokens        map[string]string          // guarded by mu; principal by access token
	grants        map[string]map[string]bool // guarded by mu; ids by principal
	impersonators map[string]bool            // guarded by mu; principal NUL email
	lifetime      time.Duration              // guarded by mu; of issued tokens
	stops         []func()                   // guarded by mu; servers Stop ends besides the gRPC one
}

type secret struct {
	created  time.Time
	versions []*version // index i is version i+1
}

type version struct {
	data    []byte
	state   secretmanagerpb.SecretVersion_State
	created time.Time
}

// New returns a fake of project's secrets.
func New(project string) *Fake {
	return &Fake{Project: project, secrets: map[string]*secret{}, calls: map[string]int{}, corrupt: map[string]bool{},
		tokens: map[string]string{}, grants: map[string]map[string]bool{}, impersonators: map[string]bool{}}
}

// Start serves on addr ("127.0.0.1:0" for any port) and returns the
// address it took.
func (f *Fake) Start(addr string) (string, error) {
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return "", err
	}
	srv := grpc.NewServer(grpc.UnaryInterceptor(f.intercept))
	registerService(srv, f)
	f.mu.Lock()
	f.srv, f.addr = srv, lis.Addr().String()
	f.mu.Unlock()
	go srv.Serve(lis)
	return lis.Addr().String(), nil
}

func registerService(srv *grpc.Server, f *Fake) {
	secretmanagerpb.RegisterSecretManagerServiceServer(srv, f)
}

// Stop stops serving the API (an outage); Start on the same address
// serves again.
func (f *Fake) Stop() {
	f.mu.Lock()
	srv := f.srv
	f.srv = nil
	f.mu.Unlock()
	if srv != nil {
		srv.Stop()
	}
}

// Close stops everything the fake serves.
func (f *Fake) Close() {
	f.Stop()
	f.mu.Lock()
	stops := f.stops
	f.stops = nil
	f.mu.Unlock()
	for _, stop := range stops {
		stop()
	}
}

// Fail makes every call fail with code (codes.OK: none).
func (f *Fake) Fail(code codes.Code) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fail = code
}

// Corrupt makes the checksum of id's payloads wrong.
func (f *Fake) Corrupt(id string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.corrupt[id] = true
}

// Calls is how many calls of method (e.g. "AccessSecretVersion") came.
func (f *Fake) Calls(method string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[method]
}

func (f *Fake) intercept(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	method := info.FullMethod[strings.LastIndexByte(info.FullMethod, '/')+1:]
	f.mu.Lock()
	f.calls[method]++
	fail := f.fail
	f.mu.Unlock()
	if fail != codes.OK {
		return nil, status.Errorf(fail, "fake: failing every call with %s", fail)
	}
	return handler(ctx, req)
}

// Put creates id if it does not exist and adds a version with data.
func (f *Fake) Put(id string, data []byte) {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := f.secrets[id]
	if s == nil {
		s = &secret{created: time.Now()}
		f.secrets[id] = s
	}
	s.versions = append(s.versions, &version{data: slices.Clone(data), state: secretmanagerpb.SecretVersion_ENABLED, created: time.Now()})
}

// Delete deletes id.
func (f *Fake) Delete(id string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.secrets, id)
}

// SetState sets the state of id's version n (from 1).
func (f *Fake) SetState(id string, n int, state secretmanagerpb.SecretVersion_State) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if s := f.secrets[id]; s != nil && n >= 1 && n <= len(s.versions) {
		v := s.versions[n-1]
		v.state = state
		if state == secretmanagerpb.SecretVersion_DESTROYED {
			v.data = nil
		}
	}
}

func (f *Fake) parent() string { return "projects/" + f.Project }

// secretOf parses projects/P/secrets/ID; called with mu held.
func (f *Fake) secretOf(name string) (string, *secret, error) {
	id, ok := strings.CutPrefix(name, f.parent()+"/secrets/")
	if !ok || id == "" || strings.Contains(id, "/") {
		return "", nil, status.Errorf(codes.InvalidArgument, "invalid resource name %q", name)
	}
	s := f.secrets[id]
	if s == nil {
		return id, nil, status.Errorf(codes.NotFound, "Secret [%s] not found or has no versions.", name)
	}
	return id, s, nil
}

// versionOf parses projects/P/secrets/ID/versions/V; called with mu held.
func (f *Fake) versionOf(name string) (string, int, *version, error) {
	sname, v, ok := strings.Cut(strings.Replace(name, "/versions/", "\x00", 1), "\x00")
	if !ok {
		return "", 0, nil, status.Errorf(codes.InvalidArgument, "invalid resource name %q", name)
	}
	id, s, err := f.secretOf(sname)
	if err != nil {
		return "", 0, nil, err
	}
	n := len(s.versions)
	if v != "latest" {
		if n, err = strconv.Atoi(v); err != nil {
			return "", 0, nil, status.Errorf(codes.InvalidArgument, "invalid version %q", v)
		}
	}
	if n < 1 || n > len(s.versions) {
		return "", 0, nil, status.Errorf(codes.NotFound, "Secret Version [%s] not found.", name)
	}
	return id, n, s.versions[n-1], nil
}

func (f *Fake) versionPB(id string, n int, v *version) *secretmanagerpb.SecretVersion {
	return &secretmanagerpb.SecretVersion{Name: fmt.Sprintf("%s/secrets/%s/versions/%d", f.parent(), id, n), State: v.state, CreateTime: timestamppb.New(v.created)}
}

func (f *Fake) secretPB(id string, s *secret) *secretmanagerpb.Secret {
	return &secretmanagerpb.Secret{Name: f.parent() + "/secrets/" + id, CreateTime: timestamppb.New(s.created)}
}

func (f *Fake) AccessSecretVersion(ctx context.Context, req *secretmanagerpb.AccessSecretVersionRequest) (*secretmanagerpb.AccessSecretVersionResponse, error) {
	// IAM comes first: without access, whether it exists is not told.
	id, _, _ := strings.Cut(strings.TrimPrefix(req.GetName(), f.parent()+"/secrets/"), "/")
	if err := f.authorize(ctx, id); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	id, n, v, err := f.versionOf(req.GetName())
	if err != nil {
		return nil, err
	}
	if v.state != secretmanagerpb.SecretVersion_ENABLED {
		return nil, status.Errorf(codes.FailedPrecondition, "Secret Version [%s] is in %s state.", req.GetName(), v.state)
	}
	sum := int64(crc32.Checksum(v.data, crc32.MakeTable(crc32.Castagnoli)))
	if f.corrupt[id] {
		sum++
	}
	return &secretmanagerpb.AccessSecretVersionResponse{
		Name:    f.versionPB(id, n, v).Name,
		Payload: &secretmanagerpb.SecretPayload{Data: slices.Clone(v.data), DataCrc32C: &sum},
	}, nil
}

func (f *Fake) ListSecrets(ctx context.Context, req *secretmanagerpb.ListSecretsRequest) (*secretmanagerpb.ListSecretsResponse, error) {
	if err := f.authorize(ctx, ""); err != nil {
		return nil, err
	}
	if req.GetParent() != f.parent() {
		return nil, status.Errorf(codes.NotFound, "project %q not found", req.GetParent())
	}
	size := int(req.GetPageSize())
	switch {
	case size <= 0:
		size = 25
	case size > 25000:
		size = 25000
	}
	if f.MaxPage > 0 {
		size = min(size, f.MaxPage)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	ids := make([]string, 0, len(f.secrets))
	for id := range f.secrets {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	start := 0
	if tok := req.GetPageToken(); tok != "" {
		start, _ = slices.BinarySearch(ids, tok)
	}
	out := &secretmanagerpb.ListSecretsResponse{TotalSize: int32(len(ids))}
	for _, id := range ids[start:] {
		if len(out.Secrets) == size {
			out.NextPageToken = id
			break
		}
		out.Secrets = append(out.Secrets, f.secretPB(id, f.secrets[id]))
	}
	return out, nil
}

func (f *Fake) GetSecret(_ context.Context, req *secretmanagerpb.GetSecretRequest) (*secretmanagerpb.Secret, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	id, s, err := f.secretOf(req.GetName())
	if err != nil {
		return nil, err
	}
	return f.secretPB(id, s), nil
}

func (f *Fake) CreateSecret(_ context.Context, req *secretmanagerpb.CreateSecretRequest) (*secretmanagerpb.Secret, error) {
	if req.GetParent() != f.parent() {
		return nil, status.Errorf(codes.NotFound, "project %q not found", req.GetParent())
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	id := req.GetSecretId()
	if _, ok := f.secrets[id]; ok {
		return nil, status.Errorf(codes.AlreadyExists, "Secret [%s] already exists.", id)
	}
	s := &secret{created: time.Now()}
	f.secrets[id] = s
	return f.secretPB(id, s), nil
}

func (f *Fake) AddSecretVersion(_ context.Context, req *secretmanagerpb.AddSecretVersionRequest) (*secretmanagerpb.SecretVersion, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	id, s, err := f.secretOf(req.GetParent())
	if err != nil {
		return nil, err
	}
	data := req.GetPayload().GetData()
	if sum := req.GetPayload().DataCrc32C; sum != nil && int64(crc32.Checksum(data, crc32.MakeTable(crc32.Castagnoli))) != *sum {
		return nil, status.Error(codes.InvalidArgument, "data_crc32c does not match the data")
	}
	v := &version{data: slices.Clone(data), state: secretmanagerpb.SecretVersion_ENABLED, created: time.Now()}
	s.versions = append(s.versions, v)
	return f.versionPB(id, len(s.versions), v), nil
}

func (f *Fake) setState(name string, state secretmanagerpb.SecretVersion_State) (*secretmanagerpb.SecretVersion, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	id, n, v, err := f.versionOf(name)
	if err != nil {
		return nil, err
	}
	if v.state == secretmanagerpb.SecretVersion_DESTROYED {
		return nil, status.Errorf(codes.FailedPrecondition, "Secret Version [%s] is destroyed.", name)
	}
	v.state = state
	if state == secretmanagerpb.SecretVersion_DESTROYED {
		v.data = nil
	}
	return f.versionPB(id, n, v), nil
}

func (f *Fake) DisableSecretVersion(_ context.Context, req *secretmanagerpb.DisableSecretVersionRequest) (*secretmanagerpb.SecretVersion, error) {
	return f.setState(req.GetName(), secretmanagerpb.SecretVersion_DISABLED)
}

func (f *Fake) EnableSecretVersion(_ context.Context, req *secretmanagerpb.EnableSecretVersionRequest) (*secretmanagerpb.SecretVersion, error) {
	return f.setState(req.GetName(), secretmanagerpb.SecretVersion_ENABLED)
}

func (f *Fake) DestroySecretVersion(_ context.Context, req *secretmanagerpb.DestroySecretVersionRequest) (*secretmanagerpb.SecretVersion, error) {
	return f.setState(req.GetName(), secretmanagerpb.SecretVersion_DESTROYED)
}

func (f *Fake) DeleteSecret(_ context.Context, req *secretmanagerpb.DeleteSecretRequest) (*emptypb.Empty, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	id, _, err := f.secretOf(req.GetName())
	if err != nil {
		return nil, err
	}
	delete(f.secrets, id)
	return &emptypb.Empty{}, nil
}
