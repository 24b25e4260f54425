# Tollgate's container image: built in a Rust image, run from distroless (glibc, CA roots, no
# shell) as a non-root user. The health check is the binary itself (`tollgate probe`).
#
#   docker build -t tollgate .
#   docker run -p 8080:8080 -p 8081:8081 -v $PWD/my.yaml:/etc/tollgate/tollgate.yaml tollgate
#
# Without a mounted config it runs the quickstart (a mock provider, demo keys).
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin tollgate && strip target/release/tollgate

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/tollgate /usr/local/bin/tollgate
COPY examples/quickstart.yaml /etc/tollgate/tollgate.yaml
# Listen on every interface inside the container; the admin API stays off unless set.
ENV TOLLGATE_PROXY_ADDR=0.0.0.0:8080 \
    TOLLGATE_STATUS_ADDR=0.0.0.0:8081 \
    TOLLGATE_CONFIG=/etc/tollgate/tollgate.yaml \
    TOLLGATE_STORE=sqlite:///tmp/tollgate-store.db
USER nonroot
EXPOSE 8080 8081
HEALTHCHECK --interval=10s --timeout=4s --start-period=10s --retries=3 \
  CMD ["/usr/local/bin/tollgate", "probe", "http://127.0.0.1:8081/ready"]
ENTRYPOINT ["/usr/local/bin/tollgate"]
CMD ["serve"]
