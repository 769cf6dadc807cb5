using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using Bursar.Caching.Redis;
using Bursar.Core.Budgets;
using Bursar.Storage.Sqlite;
using Microsoft.Extensions.Logging.Abstractions;
using StackExchange.Redis;

namespace Bursar.Benchmarks;

/// <summary>
/// <c>redis-reserve [calls]</c>: what counting budgets in Redis adds to a call, against counting them in process, in
/// one run. Starts its own redis-server on a free loopback port; each call reserves against two budgets (a customer's
/// and a global one, as admission does) and settles (off the call path with Redis). Prints p50/p99 of the reservation.
/// </summary>
public static class RedisReservation
{
    public static async Task RunAsync(string[] args)
    {
        var calls = args.Length > 1 ? int.Parse(args[1], System.Globalization.CultureInfo.InvariantCulture) : 20_000;
        var port = FreePort();
        using var redis = Process.Start(new ProcessStartInfo("redis-server", $"--port {port} --bind 127.0.0.1 --save \"\" --appendonly no") { RedirectStandardOutput = true, UseShellExecute = false })!;
        var dir = Path.Combine(Path.GetTempPath(), "bursar-bench-redis-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(dir);
        try
        {
            await WaitForAsync(port);
            var store = new SqliteStore(Path.Combine(dir, "b.db"));
            await store.UpsertBudgetAsync(new BudgetDefinition { Id = "acme", Scope = BudgetScope.Customer, Value = "acme", Period = BudgetPeriod.Month, LimitUsd = 1_000_000m }, default);
            await store.UpsertBudgetAsync(new BudgetDefinition { Id = "all", Scope = BudgetScope.Global, Period = BudgetPeriod.Month, LimitUsd = 1_000_000m }, default);
            using var mux = await ConnectionMultiplexer.ConnectAsync($"127.0.0.1:{port}");
            using var counters = new RedisBudgetCounters(mux, TimeProvider.System);
            var local = new BudgetManager(store, new Sink(), TimeProvider.System, NullLogger<BudgetManager>.Instance);
            await using var shared = new BudgetManager(store, new Sink(), TimeProvider.System, NullLogger<BudgetManager>.Instance, counters);
            await local.ReloadAsync(default);
            await shared.ReloadAsync(default);
            var subject = new BudgetSubject("k", null, "acme", null, "gpt-4o-mini");
            Console.WriteLine($"{calls:N0} reservations against 2 budgets each, in process and in Redis (127.0.0.1:{port}), alternating rounds of 1,000");
            var l = new List<double>(calls);
            var r = new List<double>(calls);
            for (var round = 0; round < calls / 1000; round++)
            {
                await Measure(local, subject, 1000, l);
                await Measure(shared, subject, 1000, r);
            }
            await shared.FlushSettlesAsync(TimeSpan.FromSeconds(30));
            Print("in process", l);
            Print("Redis", r);
            Console.WriteLine($"added by Redis per call (p50): {Percentile(r, 0.5) - Percentile(l, 0.5):F1} us; settled in Redis: ${(await shared.SnapshotAsync())[0].SpentUsd}");
        }
        finally
        {
            redis.Kill();
            try { Directory.Delete(dir, true); } catch (IOException) { }
        }
    }

    private static async Task Measure(BudgetManager budgets, BudgetSubject subject, int n, List<double> into)
    {
        for (var i = 0; i < n; i++)
        {
            var t = Stopwatch.GetTimestamp();
            var d = await budgets.TryReserveAsync(subject, 0.002m, default);
            into.Add(Stopwatch.GetElapsedTime(t).TotalMicroseconds);
            budgets.Settle(d.Reservation, 0.001m);
        }
    }

    private static void Print(string what, List<double> us) =>
        Console.WriteLine($"{what,-12} p50 {Percentile(us, 0.5),8:F1} us   p99 {Percentile(us, 0.99),8:F1} us   mean {us.Average(),8:F1} us");

    private static double Percentile(List<double> values, double p)
    {
        var sorted = values.Order().ToArray();
        return sorted[Math.Min(sorted.Length - 1, (int)(p * sorted.Length))];
    }

    private static int FreePort()
    {
        var l = new TcpListener(IPAddress.Loopback, 0);
        l.Start();
        var port = ((IPEndPoint)l.LocalEndpoint).Port;
        l.Stop();
        return port;
    }

    private static async Task WaitForAsync(int port)
    {
        for (var i = 0; i < 100; i++)
        {
            try
            {
                using var c = new TcpClient();
                await c.ConnectAsync(IPAddress.Loopback, port);
                return;
            }
            catch (SocketException) { await Task.Delay(50); }
        }
        throw new InvalidOperationException("redis-server did not start");
    }

    private sealed class Sink : IBudgetAlertSink
    {
        public void SoftLimitReached(BudgetStatus status) { }
    }
}
