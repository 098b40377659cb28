# nhid build, test and code generation.
GO            ?= go
BIN           ?= bin
PROTOC_GEN_GO_VERSION      := v1.36.12
PROTOC_GEN_GO_GRPC_VERSION := v1.6.1
TOOLS         := $(CURDIR)/.tools
PROTOS        := $(shell find proto -name '*.proto' | sort)
TEST_TIMEOUT  ?= 20m

.PHONY: all build test test-short bench generate generate-check lint quickstart clean tools

all: build

build:
	$(GO) build -o $(BIN)/ ./cmd/... ./examples/whoami ./examples/agent-task ./examples/resource-server

test:
	$(GO) vet ./...
	$(GO) test -count=1 -timeout $(TEST_TIMEOUT) ./...

test-short:
	$(GO) test -short ./...

bench:
	$(GO) test -run '^$$' -bench . -benchmem ./...

$(TOOLS)/protoc-gen-go:
	GOBIN=$(TOOLS) $(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)

$(TOOLS)/protoc-gen-go-grpc:
	GOBIN=$(TOOLS) $(GO) install google.golang.org/grpc/cmd/protoc-gen-go-grpc@$(PROTOC_GEN_GO_GRPC_VERSION)

tools: $(TOOLS)/protoc-gen-go $(TOOLS)/protoc-gen-go-grpc
	@command -v protoc >/dev/null || { echo "protoc not found: apt-get install -y protobuf-compiler" >&2; exit 1; }

generate: tools
	PATH=$(TOOLS):$$PATH protoc -I proto \
		--go_out=. --go_opt=module=github.com/nhid/nhid \
		--go-grpc_out=. --go-grpc_opt=module=github.com/nhid/nhid \
		$(PROTOS)

# generate-check fails when the committed generated code differs from what
# the .proto files generate.
generate-check: generate
	@git diff --exit-code -- proto || { echo "generated code is stale: run make generate and commit" >&2; exit 1; }
	@test -z "$$(git status --porcelain -- proto | grep '^??')" || { echo "untracked generated files: run make generate and commit" >&2; exit 1; }

lint:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "gofmt needed" >&2; exit 1; }
	$(GO) vet ./...

quickstart: build
	BIN=$(BIN) scripts/quickstart.sh

clean:
	rm -rf $(BIN) $(TOOLS)
