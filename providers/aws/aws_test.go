package aws

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	sm "github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager/types"
	"github.com/aws/smithy-go"

	"github.com/secretfs/secretfs/resolver"
)

// The end-to-end tests run against a real emulator (integration/); these
// cover decisions the emulator cannot show, such as AWS error codes it
// never sends.

func TestMapError(t *testing.T) {
	tests := []struct {
		err  error
		want error // nil: none of the sentinels
	}{
		{&types.ResourceNotFoundException{}, resolver.ErrNotFound},
		{&smithy.GenericAPIError{Code: "InvalidRequestException", Message: "You can't perform this operation on the secret because it was marked for deletion."}, resolver.ErrNotFound},
		{&smithy.GenericAPIError{Code: "AccessDeniedException"}, resolver.ErrPermission},
		{&smithy.GenericAPIError{Code: "ThrottlingException"}, resolver.ErrUnavailable},
		{&types.InternalServiceError{}, resolver.ErrUnavailable},
		{&net.OpError{Op: "dial", Err: errors.New("connection refused")}, resolver.ErrUnavailable},
		{context.DeadlineExceeded, resolver.ErrUnavailable},
		{&types.DecryptionFailure{}, resolver.ErrPermission},
		{&smithy.GenericAPIError{Code: "ExpiredTokenException"}, resolver.ErrUnavailable},
		{&smithy.GenericAPIError{Code: "UnrecognizedClientException"}, resolver.ErrUnavailable}, // credentials, not the secret
		{&smithy.GenericAPIError{Code: "InvalidSignatureException"}, resolver.ErrUnavailable},
		{&smithy.GenericAPIError{Code: "ValidationException"}, resolver.ErrNotFound},
		{&smithy.GenericAPIError{Code: "KMSInvalidStateException"}, nil},
		{&smithy.GenericAPIError{Code: "InvalidRequestException", Message: "something else"}, nil},
	}
	p := NewWithAPI(nil, Config{})
	sentinels := []error{resolver.ErrNotFound, resolver.ErrPermission, resolver.ErrUnavailable}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%T %v", tt.err, tt.err), func(t *testing.T) {
			got := p.mapError("GetSecretValue", "k", tt.err)
			for _, s := range sentinels {
				if errors.Is(got, s) != (s == tt.want) {
					t.Errorf("mapError(%v) = %v; errors.Is(%v) = %v", tt.err, got, s, errors.Is(got, s))
				}
			}
		})
	}
	if err := p.mapError("op", "k", context.Canceled); !errors.Is(err, context.Canceled) || errors.Is(err, resolver.ErrUnavailable) {
		t.Errorf("canceled = %v, want context.Canceled only", err)
	}
	for _, code := range []string{"ThrottlingException", "TooManyRequestsException"} {
		if err := p.mapError("op", "k", &smithy.GenericAPIError{Code: code}); !errors.Is(err, resolver.ErrThrottled) || !errors.Is(err, resolver.ErrUnavailable) {
			t.Errorf("%s = %v, want throttled and unavailable", code, err)
		}
	}
	// The SDK's text never reaches the error, on any branch.
	leak := fmt.Errorf("credential_process said AKIAEXAMPLESECRET: %w", context.Canceled)
	if err := p.mapError("op", "k", leak); strings.Contains(err.Error(), "AKIAEXAMPLESECRET") || !errors.Is(err, context.Canceled) {
		t.Errorf("canceled with SDK text = %q, want it redacted", err)
	}
}

// fakeAPI records requests and serves a fixed set of names.
type fakeAPI struct {
	API
	names []string
	gets  []sm.GetSecretValueInput
}

func (f *fakeAPI) GetSecretValue(ctx context.Context, in *sm.GetSecretValueInput, _ ...func(*sm.Options)) (*sm.GetSecretValueOutput, error) {
	f.gets = append(f.gets, *in)
	return &sm.GetSecretValueOutput{SecretString: aws.String("v")}, nil
}

func (f *fakeAPI) ListSecrets(ctx context.Context, in *sm.ListSecretsInput, _ ...func(*sm.Options)) (*sm.ListSecretsOutput, error) {
	out := &sm.ListSecretsOutput{}
	for _, n := range f.names {
		out.SecretList = append(out.SecretList, types.SecretListEntry{Name: aws.String(n)})
	}
	return out, nil
}

func TestNonServiceErrorsAreRedacted(t *testing.T) {
	// A credential process's unparsable output ends up in the SDK's error.
	leak := fmt.Errorf("credential process: invalid output: %q", `{"SecretAccessKey":"wJalrXUtnFEMI/K7MDENG"}`)
	err := NewWithAPI(nil, Config{}).mapError("GetSecretValue", "k", leak)
	if strings.Contains(err.Error(), "wJalrXUtnFEMI") {
		t.Errorf("error text %q contains the credential", err)
	}
	if !errors.Is(err, resolver.ErrUnavailable) || !errors.Is(err, leak) {
		t.Errorf("redacted error lost its identity: %v", err)
	}
	refused := &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connect: connection refused")}
	if got := NewWithAPI(nil, Config{}).mapError("op", "k", refused).Error(); !strings.Contains(got, "connection refused") {
		t.Errorf("connection refused lost its explanation: %q", got)
	}
}

func TestVersionSelection(t *testing.T) {
	tests := []struct {
		version         string
		stage, version2 string
	}{
		{"AWSPREVIOUS", "AWSPREVIOUS", ""},
		{"my-label", "my-label", ""},
		{"3f2504e0-4f89-11d3-9a0c-0305e82c3301", "", "3f2504e0-4f89-11d3-9a0c-0305e82c3301"},
		{"0123456789abcdef0123456789abcdef", "", "0123456789abcdef0123456789abcdef"},
	}
	for _, tt := range tests {
		f := &fakeAPI{}
		if _, err := NewWithAPI(f, Config{}).Get(context.Background(), "k", tt.version); err != nil {
			t.Fatal(err)
		}
		in := f.gets[0]
		if aws.ToString(in.VersionStage) != tt.stage || aws.ToString(in.VersionId) != tt.version2 {
			t.Errorf("version %q: stage %q id %q; want %q %q", tt.version, aws.ToString(in.VersionStage), aws.ToString(in.VersionId), tt.stage, tt.version2)
		}
	}
}

func TestPrefixesAndListing(t *testing.T) {
	f := &fakeAPI{names: []string{"prod/app/db", "prod/app/api", "prod/web", "dev/x", "top", "Prod/app/case", "/leading"}}
	tests := []struct {
		prefixes []string
		dir      string
		want     []string
	}{
		{nil, "", []string{"dev/", "prod/", "top", "Prod/"}},
		{nil, "prod", []string{"app/", "web"}},
		{nil, "prod/app", []string{"db", "api"}},
		{[]string{"prod/app/"}, "", []string{"prod/"}},
		{[]string{"prod/app/"}, "prod", []string{"app/"}},
		{[]string{"prod/app/"}, "prod/app", []string{"db", "api"}},
		{[]string{"prod/app/"}, "dev", nil},
		{[]string{"dev/", "top"}, "", []string{"dev/", "top"}},
	}
	for _, tt := range tests {
		p := NewWithAPI(f, Config{Prefixes: tt.prefixes})
		got, err := p.List(context.Background(), tt.dir)
		if err != nil {
			t.Fatal(err)
		}
		slices.Sort(got)
		slices.Sort(tt.want)
		if !slices.Equal(got, tt.want) {
			t.Errorf("prefixes %q, List(%q) = %q, want %q", tt.prefixes, tt.dir, got, tt.want)
		}
	}
	f.gets = nil
	p := NewWithAPI(f, Config{Prefixes: []string{"prod/"}})
	if _, err := p.Get(context.Background(), "dev/x", ""); !errors.Is(err, resolver.ErrNotFound) || len(f.gets) != 0 {
		t.Errorf("outside the prefix: %v after %d API calls; want ErrNotFound after none", err, len(f.gets))
	}
}

// batchAPI answers BatchGetSecretValue, or refuses it like kumo does.
type batchAPI struct {
	fakeAPI
	unsupported bool
	batches     [][]string
}

func (b *batchAPI) BatchGetSecretValue(ctx context.Context, in *sm.BatchGetSecretValueInput, _ ...func(*sm.Options)) (*sm.BatchGetSecretValueOutput, error) {
	if b.unsupported {
		return nil, &smithy.GenericAPIError{Code: "InvalidAction"}
	}
	b.batches = append(b.batches, in.SecretIdList)
	out := &sm.BatchGetSecretValueOutput{}
	for _, id := range in.SecretIdList {
		out.SecretValues = append(out.SecretValues, types.SecretValueEntry{Name: aws.String(id), SecretString: aws.String("v-" + id)})
	}
	return out, nil
}

func TestGetBatch(t *testing.T) {
	var keys []string
	for i := range 45 {
		keys = append(keys, fmt.Sprintf("prod/k%02d", i))
	}
	keys = append(keys, "dev/outside")
	b := &batchAPI{}
	p := NewWithAPI(b, Config{Prefixes: []string{"prod/"}})
	got, err := p.GetBatch(context.Background(), keys)
	if err != nil {
		t.Fatal(err)
	}
	if len(b.batches) != 3 || len(b.batches[0]) != 20 || len(b.batches[2]) != 5 {
		t.Errorf("batch sizes: %d calls %v; want 20, 20, 5", len(b.batches), b.batches)
	}
	if len(got) != 45 || string(got["prod/k07"].Value) != "v-prod/k07" {
		t.Errorf("got %d values, prod/k07 = %q", len(got), got["prod/k07"].Value)
	}
	if _, ok := got["dev/outside"]; ok {
		t.Error("a name outside the prefixes was requested")
	}

	u := &batchAPI{unsupported: true}
	p = NewWithAPI(u, Config{})
	for range 2 {
		if _, err := p.GetBatch(context.Background(), keys); !errors.Is(err, errors.ErrUnsupported) {
			t.Fatalf("unsupported batch: %v, want ErrUnsupported", err)
		}
	}
}

// pagedAPI serves names with the service's name filter and paging.
type pagedAPI struct {
	fakeAPI
	lists []sm.ListSecretsInput
}

func (f *pagedAPI) ListSecrets(ctx context.Context, in *sm.ListSecretsInput, _ ...func(*sm.Options)) (*sm.ListSecretsOutput, error) {
	f.lists = append(f.lists, *in)
	var kept []string
	for _, n := range f.names {
		if len(in.Filters) == 0 || strings.HasPrefix(n, in.Filters[0].Values[0]) {
			kept = append(kept, n)
		}
	}
	out := &sm.ListSecretsOutput{}
	max := int(aws.ToInt32(in.MaxResults))
	for i, n := range kept {
		if i == max {
			out.NextToken = aws.String("more")
			break
		}
		out.SecretList = append(out.SecretList, types.SecretListEntry{Name: aws.String(n)})
	}
	return out, nil
}

func TestProbe(t *testing.T) {
	var names []string
	for i := range 150 {
		names = append(names, fmt.Sprintf("big/s%03d", i))
	}
	names = append(names, "small/a", "small/b/c", "top")
	tests := []struct {
		prefixes     []string
		dir          string
		want         []string
		complete     bool
		wantErr      error
		wantFilter   string
		wantListings int
	}{
		{dir: "small", want: []string{"a", "b/"}, complete: true, wantFilter: "small/", wantListings: 1},
		{dir: "big", want: nil, complete: false, wantFilter: "big/", wantListings: 1}, // 100 of 150: a page, not all
		{dir: "small/b", want: []string{"c"}, complete: true, wantFilter: "small/b/", wantListings: 1},
		{dir: "none", want: nil, complete: true, wantFilter: "none/", wantListings: 1},
		{prefixes: []string{"small/"}, dir: "", wantErr: errors.ErrUnsupported},
		{prefixes: []string{"small/"}, dir: "small", want: []string{"a", "b/"}, complete: true, wantFilter: "small/", wantListings: 1},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.prefixes, tt.dir), func(t *testing.T) {
			f := &pagedAPI{fakeAPI: fakeAPI{names: names}}
			got, complete, err := NewWithAPI(f, Config{Prefixes: tt.prefixes}).Probe(context.Background(), tt.dir)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) || len(f.lists) != 0 {
					t.Fatalf("Probe = %v after %d calls, want %v and no call", err, len(f.lists), tt.wantErr)
				}
				return
			}
			if err != nil || len(f.lists) != tt.wantListings {
				t.Fatalf("Probe: %v after %d ListSecrets calls, want %d", err, len(f.lists), tt.wantListings)
			}
			if tt.dir == "big" {
				if len(got) != 100 || complete {
					t.Errorf("Probe(big) = %d names, complete %v; want a page of 100, not complete", len(got), complete)
				}
			} else if fmt.Sprint(got) != fmt.Sprint(tt.want) || complete != tt.complete {
				t.Errorf("Probe(%q) = %q, complete %v; want %q, %v", tt.dir, got, complete, tt.want, tt.complete)
			}
			in := f.lists[0]
			if aws.ToInt32(in.MaxResults) != probePage || in.Filters[0].Values[0] != tt.wantFilter {
				t.Errorf("ListSecrets(MaxResults %d, filter %v), want one page of %d with the filter %q", aws.ToInt32(in.MaxResults), in.Filters, probePage, tt.wantFilter)
			}
		})
	}
}
