// Package aws is the provider of AWS Secrets Manager secrets.
//
// A key is a secret name ("prod/db-password"); its "/" separate directories.
// A version is a staging label (AWSCURRENT, AWSPREVIOUS, a custom label) or,
// when it looks like one (a UUID, or 32 to 64 hexadecimal digits and
// dashes), a version id. The value is the SecretString as it is, or the
// SecretBinary byte for byte.
//
// Credentials and region come from the SDK's default chain (environment,
// shared config and profiles, SSO, web identity, container and instance
// roles), so the provider runs wherever the AWS CLI would. The SDK's own
// AWS_ENDPOINT_URL_SECRETS_MANAGER and AWS_ENDPOINT_URL point it elsewhere
// (the tests use that to reach an emulator). Throttling and transient
// failures are retried by the SDK's standard retryer with a short backoff,
// always within the caller's deadline; what still fails is
// resolver.ErrUnavailable, so the cache serves the last good value. So are
// rejected credentials (UnrecognizedClientException, ExpiredToken,
// InvalidSignature): they say nothing about the secret.
//
// A WebIdentity in the Config replaces the chain's credentials with a
// role assumed through AssumeRoleWithWebIdentity, with a token that is
// asked for at every refresh (a Kubernetes pod's service-account token);
// the credentials are cached until shortly before they expire. The
// region and endpoints still come from the chain.
//
// Prefixes confine the provider: a name outside them is not found without
// an API call, and listings never show it. This keeps both IAM policies and
// listings small.
//
// Listing walks ListSecrets (every page, with a name filter; the prefix is
// checked on the client side too). Because names are flat, listing a
// directory costs its whole subtree, so the provider also probes
// (resolver.Prober): one page below a directory, which decides a lookup
// without a walk. Throttling is ErrUnavailable and ErrThrottled, after the
// SDK's adaptive retries.
// Reading many secrets at once (GetBatch) uses BatchGetSecretValue, twenty
// names a call; where the service does not support it (or IAM does not
// allow it), GetBatch says errors.ErrUnsupported once and for all and
// callers read one by one.
package aws

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"regexp"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/middleware"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials/stscreds"
	sm "github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager/types"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	"github.com/aws/smithy-go"
	smithymw "github.com/aws/smithy-go/middleware"

	"github.com/secretfs/secretfs/resolver"
)

// Name is the provider's name in references.
const Name = "aws"

// batchSize is the most names BatchGetSecretValue takes in SecretIdList.
const batchSize = 20

// API is the part of the Secrets Manager client the provider uses.
type API interface {
	GetSecretValue(context.Context, *sm.GetSecretValueInput, ...func(*sm.Options)) (*sm.GetSecretValueOutput, error)
	ListSecrets(context.Context, *sm.ListSecretsInput, ...func(*sm.Options)) (*sm.ListSecretsOutput, error)
	BatchGetSecretValue(context.Context, *sm.BatchGetSecretValueInput, ...func(*sm.Options)) (*sm.BatchGetSecretValueOutput, error)
}

// Config configures New.
type Config struct {
	Region   string   // overrides the SDK's region (AWS_REGION, profile)
	Profile  string   // a shared config profile
	Prefixes []string // only names that start with one of these; all when empty
	// WebIdentity, when set, is the role to assume instead of the chain's
	// credentials.
	WebIdentity *WebIdentity
	Logger      *slog.Logger
}

// WebIdentity is a role assumed with a web identity token.
type WebIdentity struct {
	RoleARN     string
	SessionName string // default: secretfs
	// Token returns the current token; it is called at every refresh.
	Token func() ([]byte, error)
}

// GetIdentityToken implements stscreds.IdentityTokenRetriever.
func (w *WebIdentity) GetIdentityToken() ([]byte, error) { return w.Token() }

// Provider reads AWS Secrets Manager. It is safe for concurrent use.
type Provider struct {
	api      API
	prefixes []string
	log      *slog.Logger
	noBatch  atomic.Bool // set once the service said it has no BatchGetSecretValue

}

// New builds a client from the SDK's default configuration chain.
func New(ctx context.Context, cfg Config) (*Provider, error) {
	p := newProvider(nil, cfg)
	opts := []func(*config.LoadOptions) error{
		config.WithRetryer(func() aws.Retryer {
			// Adaptive mode: throttling slows the client down (a token
			// bucket) as the service asks. Retries fit well inside a
			// call's budget: a refused connection costs milliseconds, and
			// the cache's probe, not the SDK, waits out a longer outage.
			return retry.NewAdaptiveMode(func(o *retry.AdaptiveModeOptions) {
				o.StandardOptions = append(o.StandardOptions, func(so *retry.StandardOptions) {
					so.MaxAttempts = 3
					so.MaxBackoff = 200 * time.Millisecond
				})
			})
		}),
	}
	if cfg.Region != "" {
		opts = append(opts, config.WithRegion(cfg.Region))
	}
	if cfg.Profile != "" {
		opts = append(opts, config.WithSharedConfigProfile(cfg.Profile))
	}
	awsCfg, err := config.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("aws: load configuration: %w", err)
	}
	if awsCfg.Region == "" {
		return nil, errors.New("aws: no region: set --aws-region, AWS_REGION or a profile's region")
	}
	if w := cfg.WebIdentity; w != nil {
		name := w.SessionName
		if name == "" {
			name = "secretfs"
		}
		awsCfg.Credentials = aws.NewCredentialsCache(stscreds.NewWebIdentityRoleProvider(sts.NewFromConfig(awsCfg), w.RoleARN, w,
			func(o *stscreds.WebIdentityRoleOptions) { o.RoleSessionName = name }))
	}
	p.api = sm.NewFromConfig(awsCfg, func(o *sm.Options) {
		o.APIOptions = append(o.APIOptions, p.countCalls)
	})
	return p, nil
}

// NewWithAPI returns a Provider that uses api (a client built elsewhere).
func NewWithAPI(api API, cfg Config) *Provider { return newProvider(api, cfg) }

func newProvider(api API, cfg Config) *Provider {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Provider{api: api, prefixes: cfg.Prefixes, log: log}
}

// countCalls is SDK middleware: it logs every API call at debug level
// (operation only; a request's payload is never logged), which is how the
// tests count calls.
func (p *Provider) countCalls(stack *smithymw.Stack) error {
	return stack.Initialize.Add(smithymw.InitializeMiddlewareFunc("secretfsCountCalls",
		func(ctx context.Context, in smithymw.InitializeInput, next smithymw.InitializeHandler) (smithymw.InitializeOutput, smithymw.Metadata, error) {
			p.log.Debug("aws api call", "operation", middleware.GetOperationName(ctx))
			return next.HandleInitialize(ctx, in)
		}), smithymw.After)
}

// Name implements resolver.Provider.
func (p *Provider) Name() string { return Name }

func (p *Provider) allowed(name string) bool {
	if len(p.prefixes) == 0 {
		return true
	}
	for _, pre := range p.prefixes {
		if strings.HasPrefix(name, pre) {
			return true
		}
	}
	return false
}

var versionID = regexp.MustCompile(`^([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}|[0-9a-fA-F-]{32,64})$`)

// Get implements resolver.Provider.
func (p *Provider) Get(ctx context.Context, key, version string) (resolver.Secret, error) {
	if !p.allowed(key) {
		return resolver.Secret{}, fmt.Errorf("aws %s: %w (outside --aws-prefix)", key, resolver.ErrNotFound)
	}
	in := &sm.GetSecretValueInput{SecretId: aws.String(key)}
	switch {
	case version == "":
	case versionID.MatchString(version):
		in.VersionId = aws.String(version)
	default:
		in.VersionStage = aws.String(version)
	}
	out, err := p.api.GetSecretValue(ctx, in)
	if err != nil {
		return resolver.Secret{}, p.mapError("GetSecretValue", key, err)
	}
	return secretOf(out.SecretString, out.SecretBinary, out.VersionId, out.CreatedDate), nil
}

func secretOf(str *string, bin []byte, versionID *string, created *time.Time) resolver.Secret {
	s := resolver.Secret{Version: aws.ToString(versionID), Created: aws.ToTime(created)}
	if str != nil {
		s.Value = []byte(*str)
	} else {
		s.Value = bin
	}
	return s
}

// mapError turns an SDK error into the resolver's sentinels. It logs what
// is neither not-found nor an outage, with the error code and name.
func (p *Provider) mapError(op, key string, err error) error {
	if errors.Is(err, context.Canceled) {
		return fmt.Errorf("aws %s %s: %w", op, key, redact(err))
	}
	var apiErr smithy.APIError
	if !errors.As(err, &apiErr) {
		// No answer from the service: connection refused, timeout, retries
		// exhausted, or no credentials. The SDK's text is not repeated: a
		// credential process's output, keys included, can be part of it.
		return fmt.Errorf("aws %s %s: %w: %w", op, key, resolver.ErrUnavailable, redact(err))
	}
	code := apiErr.ErrorCode()
	switch code {
	case "ResourceNotFoundException", "ValidationException", "InvalidParameterException":
		return fmt.Errorf("aws %s: %w (%s)", key, resolver.ErrNotFound, code)
	case "InvalidRequestException":
		if strings.Contains(strings.ToLower(apiErr.ErrorMessage()), "deletion") {
			return fmt.Errorf("aws %s: %w (scheduled for deletion)", key, resolver.ErrNotFound)
		}
	case "AccessDeniedException", "AccessDenied", "DecryptionFailure", "InvalidIdentityToken", "IDPRejectedClaim":
		// DecryptionFailure: as a rule, KMS refusing this principal the key.
		// InvalidIdentityToken, IDPRejectedClaim: STS refusing a web
		// identity its role.
		return fmt.Errorf("aws %s %s: %w: %s", op, key, resolver.ErrPermission, code)
	case "UnrecognizedClientException", "ExpiredTokenException", "ExpiredToken", "InvalidSignatureException",
		"IncompleteSignature", "InvalidClientTokenId":
		// secretfs's own credentials failed (rotated, expired, clock skew):
		// that says nothing about the secret, so a cached value is served.
		return fmt.Errorf("aws %s %s: %w: credentials rejected (%s)", op, key, resolver.ErrUnavailable, code)
	case "ThrottlingException", "TooManyRequestsException", "RequestLimitExceeded", "Throttling":
		return fmt.Errorf("aws %s %s: %w: %w (%s)", op, key, resolver.ErrUnavailable, resolver.ErrThrottled, code)
	case "InternalServiceError", "InternalFailure", "ServiceUnavailable", "RequestTimeout", "IDPCommunicationError":
		return fmt.Errorf("aws %s %s: %w: %s", op, key, resolver.ErrUnavailable, code)
	}
	var re interface{ HTTPStatusCode() int }
	if errors.As(err, &re) && re.HTTPStatusCode() == 429 {
		return fmt.Errorf("aws %s %s: %w: %w (HTTP 429)", op, key, resolver.ErrUnavailable, resolver.ErrThrottled)
	}
	p.log.Error("aws service error", "operation", op, "secret", key, "code", code)
	return fmt.Errorf("aws %s %s: service error %s", op, key, code)
}

// redacted keeps an error's identity (errors.Is and As still see it) but
// says only what kind of failure it was.
type redacted struct{ err error }

func redact(err error) error { return redacted{err} }

func (r redacted) Unwrap() error { return r.err }

func (r redacted) Error() string {
	var ne net.Error
	var oe *net.OpError
	switch {
	case errors.Is(r.err, context.Canceled):
		return "canceled"
	case errors.Is(r.err, context.DeadlineExceeded):
		return "timed out"
	case errors.As(r.err, &oe):
		return oe.Op + " " + oe.Net + ": " + oe.Err.Error() // e.g. "dial tcp: connect: connection refused"
	case errors.As(r.err, &ne) && ne.Timeout():
		return "network timeout"
	default:
		return "request failed before an answer from the service (credentials or network)"
	}
}

// List implements resolver.Lister.
func (p *Provider) List(ctx context.Context, dir string) ([]string, error) {
	under := ""
	if dir != "" {
		under = dir + "/"
	}
	// One ListSecrets walk per name filter: the directory itself when it is
	// inside an allowed prefix, else each allowed prefix inside it.
	filters := []string{under}
	if len(p.prefixes) > 0 {
		filters = nil
		for _, pre := range p.prefixes {
			if strings.HasPrefix(under, pre) {
				filters = []string{under}
				break
			}
			if strings.HasPrefix(pre, under) {
				filters = append(filters, pre)
			}
		}
	}
	seen := make(map[string]bool)
	var names []string
	for _, f := range filters {
		err := p.walk(ctx, f, func(name string) {
			if !p.allowed(name) {
				return
			}
			if entry := entryBelow(name, under); entry != "" && !seen[entry] {
				seen[entry] = true
				names = append(names, entry)
			}
		})
		if err != nil {
			return nil, err
		}
	}
	return names, nil
}

// probePage is how many names one probe asks for: the service's most, so
// that a probe of a directory of up to that many secrets is its whole
// listing.
const probePage = 100

// Probe implements resolver.Prober: one ListSecrets page (name filter
// "DIR/") below dir, named as List names them, and whether that page holds
// the whole subtree. With --aws-prefix, a directory above the prefixes is
// not probed (errors.ErrUnsupported): its listing is confined anyway.
func (p *Provider) Probe(ctx context.Context, dir string) ([]string, bool, error) {
	under := ""
	if dir != "" {
		under = dir + "/"
	}
	if !p.allowed(under) {
		return nil, false, fmt.Errorf("aws probe %s: %w", dir, errors.ErrUnsupported)
	}
	in := &sm.ListSecretsInput{MaxResults: aws.Int32(probePage)}
	if under != "" {
		in.Filters = []types.Filter{{Key: types.FilterNameStringTypeName, Values: []string{under}}}
	}
	out, err := p.api.ListSecrets(ctx, in)
	if err != nil {
		return nil, false, p.mapError("ListSecrets", under, err)
	}
	seen := make(map[string]bool)
	var names []string
	for _, e := range out.SecretList {
		if e.DeletedDate == nil {
			if entry := entryBelow(aws.ToString(e.Name), under); entry != "" && !seen[entry] {
				seen[entry] = true
				names = append(names, entry)
			}
		}
	}
	return names, aws.ToString(out.NextToken) == "", nil
}

// entryBelow names what name shows as directly below under: the secret's
// own last segment, or the directory on the way ("dir/"); "" when name is
// not below under.
func entryBelow(name, under string) string {
	entry, ok := strings.CutPrefix(name, under)
	if !ok || entry == "" {
		return ""
	}
	if seg, _, more := strings.Cut(entry, "/"); more {
		if seg == "" {
			return ""
		}
		return seg + "/"
	}
	return entry
}

// walk calls fn with every secret name that ListSecrets returns for the
// name filter (all pages).
func (p *Provider) walk(ctx context.Context, filter string, fn func(string)) error {
	in := &sm.ListSecretsInput{MaxResults: aws.Int32(100)}
	if filter != "" {
		in.Filters = []types.Filter{{Key: types.FilterNameStringTypeName, Values: []string{filter}}}
	}
	for {
		out, err := p.api.ListSecrets(ctx, in)
		if err != nil {
			return p.mapError("ListSecrets", filter, err)
		}
		for _, e := range out.SecretList {
			if e.DeletedDate == nil {
				fn(aws.ToString(e.Name))
			}
		}
		if aws.ToString(out.NextToken) == "" {
			return nil
		}
		in.NextToken = out.NextToken
	}
}

// GetBatch implements resolver.BatchGetter: the current values of keys, in
// as few calls as BatchGetSecretValue allows. Keys that are missing, outside
// the prefixes or failed on their own are absent from the result.
func (p *Provider) GetBatch(ctx context.Context, keys []string) (map[string]resolver.Secret, error) {
	if p.noBatch.Load() {
		return nil, errors.ErrUnsupported
	}
	var want []string
	for _, k := range keys {
		if p.allowed(k) {
			want = append(want, k)
		}
	}
	out := make(map[string]resolver.Secret, len(want))
	for chunk := range slices.Chunk(want, batchSize) {
		in := &sm.BatchGetSecretValueInput{SecretIdList: chunk}
		for {
			res, err := p.api.BatchGetSecretValue(ctx, in)
			if err != nil {
				var apiErr smithy.APIError
				if errors.As(err, &apiErr) {
					switch apiErr.ErrorCode() {
					case "InvalidAction", "UnknownOperationException", "UnsupportedOperation", "NotImplemented",
						"AccessDeniedException":
						p.noBatch.Store(true)
						p.log.Info("aws: BatchGetSecretValue unavailable here; reading secrets one by one", "code", apiErr.ErrorCode())
						return out, fmt.Errorf("aws BatchGetSecretValue: %w", errors.ErrUnsupported)
					}
				}
				return out, p.mapError("BatchGetSecretValue", strings.Join(chunk, ","), err)
			}
			for _, v := range res.SecretValues {
				out[aws.ToString(v.Name)] = secretOf(v.SecretString, v.SecretBinary, v.VersionId, v.CreatedDate)
			}
			if aws.ToString(res.NextToken) == "" {
				break
			}
			in.NextToken = res.NextToken
		}
	}
	return out, nil
}
