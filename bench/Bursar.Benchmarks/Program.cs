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
if (args.Length > 0 && args[0] == "report-scale")
{
    await Bursar.Benchmarks.ReportScale.RunAsync(args);
    return;
}
if (args.Length > 0 && args[0] == "library-loop")
{
    // a plain loop of UseBursar calls, to profile with dotnet-trace (not a measurement: see LibraryBenchmarks)
    var b = new Bursar.Benchmarks.LibraryBenchmarks();
    b.Setup();
    var n = args.Length > 1 ? int.Parse(args[1], System.Globalization.CultureInfo.InvariantCulture) : 200_000;
    var writer = b.Writer;
    var (spooled0, thread0, total0) = (writer.Spooled, GC.GetAllocatedBytesForCurrentThread(), GC.GetTotalAllocatedBytes(precise: true));
    var sw = System.Diagnostics.Stopwatch.StartNew();
    for (var i = 0; i < n; i++) await b.ThroughUseBursar();
    var (thread1, total1) = (GC.GetAllocatedBytesForCurrentThread(), GC.GetTotalAllocatedBytes(precise: true));
    Console.WriteLine($"{n} calls, {sw.Elapsed.TotalMilliseconds * 1000 / n:F2} us per call; allocated per call {(thread1 - thread0) / (double)n:F0} B on the calling thread, "
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
