package dev.idgraph.neo4jserver;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.FileAlreadyExistsException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.nio.file.attribute.PosixFilePermissions;
import java.security.SecureRandom;
import java.time.Duration;
import java.util.Base64;
import java.util.HashMap;
import java.util.Map;
import java.util.concurrent.CountDownLatch;

import org.neo4j.configuration.GraphDatabaseSettings;
import org.neo4j.configuration.connectors.BoltConnector;
import org.neo4j.configuration.connectors.ConnectorPortRegister;
import org.neo4j.configuration.connectors.ConnectorType;
import org.neo4j.configuration.helpers.SocketAddress;
import org.neo4j.dbms.api.DatabaseManagementService;
import org.neo4j.dbms.api.DatabaseManagementServiceBuilder;
import org.neo4j.kernel.internal.GraphDatabaseAPI;

/**
 * A local Neo4j Community DBMS with Bolt on loopback, for development, tests, CI and benches.
 *
 * <p>Arguments (all optional but --home):
 * <ul>
 *   <li>{@code --home DIR}: Neo4j's home; data, transaction logs and logs live under it.
 *   <li>{@code --port N}: the Bolt port on 127.0.0.1; 0 (the default) lets the OS choose a free
 *       one at run time, so servers of several people on one machine never collide.
 *   <li>{@code --password-file FILE}: the password of user {@code neo4j}. Generated (random, 0600)
 *       when missing, so no password ever appears in process arguments or in the repository.
 *   <li>{@code --ready-file FILE}: written (atomically) with the Bolt URI once Bolt accepts
 *       connections; removed again at shutdown. Callers wait for it.
 *   <li>{@code --pagecache SIZE}, {@code --tx-log-retention VALUE}: Neo4j settings.
 * </ul>
 *
 * <p>SIGTERM (and SIGINT) run the JVM's shutdown hooks, which shut the DBMS down cleanly: the
 * transaction logs are checkpointed and the store closed, so the next start needs no recovery.
 */
public final class LocalNeo4j {
    private LocalNeo4j() {}

    public static void main(String[] args) throws Exception {
        Map<String, String> opts = parse(args);
        Path home = Path.of(required(opts, "--home")).toAbsolutePath();
        int port = Integer.parseInt(opts.getOrDefault("--port", "0"));
        Path passwordFile = Path.of(opts.getOrDefault("--password-file", home.resolve("password").toString()));
        Path readyFile = Path.of(opts.getOrDefault("--ready-file", home.resolve("bolt-uri").toString()));
        Files.createDirectories(home);
        Files.deleteIfExists(readyFile);

        boolean generated = !Files.exists(passwordFile);
        String password = generated ? createPasswordFile(passwordFile) : Files.readString(passwordFile, StandardCharsets.UTF_8).strip();

        DatabaseManagementService dbms = new DatabaseManagementServiceBuilder(home)
                .setConfig(BoltConnector.enabled, true)
                .setConfig(BoltConnector.listen_address, new SocketAddress("127.0.0.1", port))
                .setConfig(BoltConnector.advertised_address, new SocketAddress("127.0.0.1", port))
                .setConfig(GraphDatabaseSettings.auth_enabled, true)
                .setConfig(GraphDatabaseSettings.pagecache_memory, parseBytes(opts.getOrDefault("--pagecache", "256m")))
                // How much transaction log Neo4j keeps after a checkpoint. Erased persons stay
                // readable in old log files until they are pruned: keep this short (see docs/neo4j.md).
                .setConfig(GraphDatabaseSettings.keep_logical_logs, opts.getOrDefault("--tx-log-retention", "2 days"))
                .setConfig(GraphDatabaseSettings.shutdown_transaction_end_timeout, Duration.ofSeconds(10))
                .build();
        CountDownLatch stopped = new CountDownLatch(1);
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            try {
                Files.deleteIfExists(readyFile);
            } catch (IOException ignored) {
                // Best effort: a stale ready file is re-checked by the launcher (Bolt must answer).
            }
            dbms.shutdown();
            System.out.println("neo4j: stopped cleanly");
            System.out.flush();
            stopped.countDown();
        }, "neo4j-shutdown"));

        setPassword(dbms, password, generated);
        GraphDatabaseAPI system = (GraphDatabaseAPI) dbms.database(GraphDatabaseSettings.SYSTEM_DATABASE_NAME);
        var bound = system.getDependencyResolver().resolveDependency(ConnectorPortRegister.class)
                .getLocalAddress(ConnectorType.BOLT);
        String uri = "bolt://127.0.0.1:" + bound.getPort();
        Path tmp = readyFile.resolveSibling(readyFile.getFileName() + ".tmp");
        Files.writeString(tmp, uri + "\n", StandardCharsets.UTF_8);
        Files.move(tmp, readyFile, StandardCopyOption.REPLACE_EXISTING, StandardCopyOption.ATOMIC_MOVE);
        System.out.println("neo4j: ready at " + uri + " (user neo4j, password in " + passwordFile + ")");
        System.out.flush();
        stopped.await();
    }

    /** Make the neo4j user's password the one in the file, without the "change required" flag. */
    private static void setPassword(DatabaseManagementService dbms, String password, boolean generated) {
        var system = dbms.database(GraphDatabaseSettings.SYSTEM_DATABASE_NAME);
        try {
            system.executeTransactionally(
                    "ALTER USER neo4j SET PLAINTEXT PASSWORD $password CHANGE NOT REQUIRED",
                    Map.of("password", password));
        } catch (RuntimeException e) {
            // Neo4j refuses to "change" a password to the one already set: on a restart with an
            // existing data dir and password file that is the expected case.
            if (generated) {
                throw e;
            }
        }
    }

    private static String createPasswordFile(Path file) throws IOException {
        byte[] raw = new byte[24];
        new SecureRandom().nextBytes(raw);
        String password = Base64.getUrlEncoder().withoutPadding().encodeToString(raw);
        Files.createDirectories(file.toAbsolutePath().getParent());
        try {
            // Created 0600 from the start: never readable by other users, not even briefly.
            Files.createFile(file, PosixFilePermissions.asFileAttribute(PosixFilePermissions.fromString("rw-------")));
        } catch (FileAlreadyExistsException e) {
            return Files.readString(file, StandardCharsets.UTF_8).strip();
        }
        Files.writeString(file, password + "\n", StandardCharsets.UTF_8);
        return password;
    }

    private static long parseBytes(String value) {
        String v = value.strip().toLowerCase();
        long unit = 1;
        char last = v.charAt(v.length() - 1);
        if (last == 'k' || last == 'm' || last == 'g') {
            unit = last == 'k' ? 1L << 10 : last == 'm' ? 1L << 20 : 1L << 30;
            v = v.substring(0, v.length() - 1);
        }
        return Long.parseLong(v) * unit;
    }

    private static Map<String, String> parse(String[] args) {
        Map<String, String> opts = new HashMap<>();
        for (int i = 0; i < args.length; i++) {
            if (!args[i].startsWith("--") || i + 1 >= args.length) {
                throw new IllegalArgumentException("usage: --home DIR [--port N] [--password-file F] [--ready-file F] [--pagecache SIZE] [--tx-log-retention V]");
            }
            opts.put(args[i], args[++i]);
        }
        return opts;
    }

    private static String required(Map<String, String> opts, String name) {
        String value = opts.get(name);
        if (value == null) {
            throw new IllegalArgumentException(name + " is required");
        }
        return value;
    }
}
