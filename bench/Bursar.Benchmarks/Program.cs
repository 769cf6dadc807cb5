using BenchmarkDotNet.Running;

if (args.Length > 0 && args[0] == "semantic-percentiles")
{
    Bursar.Benchmarks.SemanticPercentiles.Run();
    return;
}
if (args.Length > 0 && args[0] == "ann-percentiles")
{
    Bursar.Benchmarks.AnnPercentiles.Run(args);
    return;
}
if (args.Length > 0 && args[0] == "embed-throughput")
{
    await Bursar.Benchmarks.EmbeddingThroughput.RunAsync(args);
    return;
}
if (args.Length > 0 && args[0] == "router-percentiles")
{
    Bursar.Benchmarks.RouterBenchmarks.Percentiles();
    return;
}
if (args.Length > 0 && args[0] == "report-scale-uncosted")
{
    await Bursar.Benchmarks.ReportScale.RunUncostedAsync(args);
    return;
}
if (args.Length > 0 && args[0] == "report-scale")
{
    await Bursar.Benchmarks.ReportScale.RunAsync(args);
    return;
}
if (args.Length > 0 && args[0] == "library-loop")
{
    // a plain loop of UseBursar calls, to profile with dotnet-trace (not a measurement: see LibraryBenchmarks)
    // library-loop [calls] [Name=value ...] [--null-store]: settings such as Bursar:Ledger:QueueCapacity=1000000 for an A/B
    foreach (var kv in args.Skip(2).Where(a => a != "--null-store").Select(a => a.Split('=', 2))) Bursar.Benchmarks.LibraryBenchmarks.Settings[kv[0]] = kv[1];
    Bursar.Benchmarks.LibraryBenchmarks.NullLedgerStore = args.Contains("--null-store");
    var b = new Bursar.Benchmarks.LibraryBenchmarks();
    b.Setup();
    var n = args.Length > 1 ? int.Parse(args[1], System.Globalization.CultureInfo.InvariantCulture) : 200_000;
    var writer = b.Writer;
    var (spooled0, thread0, total0) = (writer.Spooled, GC.GetAllocatedBytesForCurrentThread(), GC.GetTotalAllocatedBytes(precise: true));
    var (gc0, gc1, gc2, paused0, contended0) = (GC.CollectionCount(0), GC.CollectionCount(1), GC.CollectionCount(2), GC.GetTotalPauseDuration(), Monitor.LockContentionCount);
    var sw = System.Diagnostics.Stopwatch.StartNew();
    var rounds = new List<string>();
    for (var round = 0; round < 10; round++)
    {
        var at = sw.Elapsed;
        for (var i = 0; i < n / 10; i++) await b.ThroughUseBursar();
        rounds.Add(((sw.Elapsed - at).TotalMilliseconds * 1000 / (n / 10)).ToString("F2", System.Globalization.CultureInfo.InvariantCulture));
    }
    var loop = sw.Elapsed;
    Console.WriteLine($"us per call in each tenth of the loop: {string.Join(" ", rounds)}");
    Console.WriteLine($"GCs during the loop: gen0 {GC.CollectionCount(0) - gc0}, gen1 {GC.CollectionCount(1) - gc1}, gen2 {GC.CollectionCount(2) - gc2}; paused {(GC.GetTotalPauseDuration() - paused0).TotalMilliseconds:F0} ms of {loop.TotalMilliseconds:F0} ms; {Monitor.LockContentionCount - contended0:N0} contended lock acquisitions");
    var (thread1, total1) = (GC.GetAllocatedBytesForCurrentThread(), GC.GetTotalAllocatedBytes(precise: true));
    Console.WriteLine($"{n} calls, {loop.TotalMilliseconds * 1000 / n:F2} us per call; allocated per call {(thread1 - thread0) / (double)n:F0} B on the calling thread, "
        + $"{(total1 - total0) / (double)n:F0} B process-wide (the ledger writer's rows and rollups included); {writer.Spooled - spooled0:N0} records overflowed the queue into the journal");
    b.Cleanup();
    return;
}
if (args.Length > 0 && args[0] == "redis-reserve")
{
    await Bursar.Benchmarks.RedisReservation.RunAsync(args);
    return;
}
if (args.Length > 0 && args[0] == "postgres-scale")
{
    await Bursar.Benchmarks.PostgresScale.RunAsync(args);
    return;
}
BenchmarkSwitcher.FromAssembly(typeof(Bursar.Benchmarks.HotPathBenchmarks).Assembly).Run(args);
