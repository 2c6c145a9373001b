package integration

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	sm "github.com/aws/aws-sdk-go-v2/service/secretsmanager"
)

// kumo is a running kumo AWS emulator (github.com/sivchari/kumo), a
// separate process on loopback. It keeps everything in memory.
type kumo struct {
	*process
	Port int
}

func (k *kumo) Endpoint() string { return fmt.Sprintf("http://127.0.0.1:%d", k.Port) }

// Env is the environment that points secretfs (and any SDK) at this kumo
// with throwaway credentials and no shared config from the machine.
func (k *kumo) Env(t testing.TB) []string {
	cfgDir := t.TempDir()
	return []string{
		"AWS_ENDPOINT_URL_SECRETS_MANAGER=" + k.Endpoint(),
		"AWS_REGION=us-east-1",
		"AWS_ACCESS_KEY_ID=test-access-key",
		"AWS_SECRET_ACCESS_KEY=test-secret-key",
		"AWS_CONFIG_FILE=" + cfgDir + "/config",
		"AWS_SHARED_CREDENTIALS_FILE=" + cfgDir + "/credentials",
		"AWS_EC2_METADATA_DISABLED=true",
		"AWS_PROFILE=",
	}
}

// Client is an SDK client for test setup.
func (k *kumo) Client() *sm.Client {
	return sm.New(sm.Options{
		Region:       "us-east-1",
		BaseEndpoint: aws.String(k.Endpoint()),
		Credentials:  credentials.NewStaticCredentialsProvider("test-access-key", "test-secret-key", ""),
	})
}

// startKumo starts a kumo on a free port (or the given one, to restart on
// the same address) and waits for /health.
func startKumo(t testing.TB, port int, env ...string) *kumo {
	t.Helper()
	k, err := launchKumo(backendBin(t, "SECRETFS_KUMO_BIN"), port, env...)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// launchKumo starts the (patched) emulator; env may set
// KUMO_SECRETFS_THROTTLE_FILE, the file whose existence makes every call
// answer ThrottlingException.
func launchKumo(bin string, port int, env ...string) (*kumo, error) {
	port, err := portOr(port)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, "--host", "127.0.0.1", "--port", fmt.Sprint(port))
	cmd.Env = append(append(os.Environ(), "KUMO_LOG_LEVEL=warn"), env...)
	cmd.Stderr = os.Stderr
	p, err := startProcess("kumo", cmd, fmt.Sprintf("http://127.0.0.1:%d/health", port))
	if err != nil {
		return nil, err
	}
	return &kumo{process: p, Port: port}, nil
}

// kumoWith starts a kumo of the test's own (stopped when it ends) holding
// secrets, name to value.
func kumoWith(t *testing.T, secrets map[string]string) *kumo {
	t.Helper()
	k := startKumo(t, 0)
	t.Cleanup(k.Stop)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for name, value := range secrets {
		if _, err := k.Client().CreateSecret(ctx, &sm.CreateSecretInput{Name: aws.String(name), SecretString: aws.String(value)}); err != nil {
			t.Fatal(err)
		}
	}
	return k
}

var sharedKumo sharedBackend[*kumo]

// awsFixture is the shared emulator with the data set of seedAWS in it.
func awsFixture(t testing.TB) *kumo {
	t.Helper()
	bin := backendBin(t, "SECRETFS_KUMO_BIN")
	return sharedKumo.get(t, func() (*kumo, error) {
		k, err := launchKumo(bin, 0)
		if err != nil {
			return nil, err
		}
		atExit(k.Stop)
		return k, seedAWS(k)
	})
}

// The data set, created through the SDK.
var (
	awsJSON   = `{"username":"admin","password":"pa$$ w0rd","port":5432,"tags":["a","b"]}`
	awsBinary = func() []byte {
		b := make([]byte, 256)
		for i := range b {
			b[i] = byte(i)
		}
		return b
	}()
	awsRotOld   = "rotated-old-value"
	awsRotNew   = "rotated-new-value!"
	awsVersions = map[string]string{} // name -> version id of the first value; filled by seedAWS
)

func bulkName(team, svc int) string { return fmt.Sprintf("bulk/team%d/svc%02d", team, svc) }

func seedAWS(k *kumo) (err error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c := k.Client()
	create := func(name string, str *string, bin []byte) string {
		out, cerr := c.CreateSecret(ctx, &sm.CreateSecretInput{Name: aws.String(name), SecretString: str, SecretBinary: bin})
		if cerr != nil && err == nil {
			err = fmt.Errorf("CreateSecret %s: %w", name, cerr)
		}
		if out == nil {
			return ""
		}
		return aws.ToString(out.VersionId)
	}
	for team := range 5 {
		for svc := range 30 {
			create(bulkName(team, svc), aws.String("value-"+bulkName(team, svc)), nil)
		}
	}
	create("json/rds", aws.String(awsJSON), nil)
	create("bin/allbytes", nil, awsBinary)
	create("user@example.com", aws.String("at-sign-secret"), nil)
	create("app", aws.String("app-itself"), nil)
	create("app/db", aws.String("app-db"), nil)
	awsVersions["rot/one"] = create("rot/one", aws.String(awsRotOld), nil)
	if _, perr := c.PutSecretValue(ctx, &sm.PutSecretValueInput{SecretId: aws.String("rot/one"), SecretString: aws.String(awsRotNew)}); perr != nil {
		return fmt.Errorf("PutSecretValue: %w", perr)
	}
	create("gone/deleted", aws.String("deleted-value"), nil)
	if _, derr := c.DeleteSecret(ctx, &sm.DeleteSecretInput{SecretId: aws.String("gone/deleted"), RecoveryWindowInDays: aws.Int64(7)}); derr != nil {
		return fmt.Errorf("DeleteSecret: %w", derr)
	}
	create("gone/kept", aws.String("kept"), nil)
	create("rotate/live", aws.String("first"), nil)
	return err
}

// awsMount mounts with the aws provider against k.
func awsMount(t testing.TB, k *kumo, args ...string) *daemon {
	return mount(t, k.Env(t), append([]string{"--providers", "aws"}, args...)...)
}

// apiCalls counts the AWS API calls a daemon logged, by operation.
func apiCalls(d *daemon, op string) int {
	return strings.Count(d.Stderr(), "operation="+op)
}
