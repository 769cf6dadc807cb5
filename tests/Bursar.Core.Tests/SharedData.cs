namespace Bursar.Core.Tests;

/// <summary>Finds <c>../shared/data</c> beside the repository root (tests never copy shared data into the project).</summary>
internal static class SharedData
{
    public static string Path(params string[] parts)
    {
        var dir = new DirectoryInfo(AppContext.BaseDirectory);
        while (dir is not null && !File.Exists(System.IO.Path.Combine(dir.FullName, "Bursar.slnx"))) dir = dir.Parent;
        if (dir is null) throw new InvalidOperationException("Repository root (Bursar.slnx) not found above " + AppContext.BaseDirectory);
        return System.IO.Path.Combine([dir.FullName, "..", "shared", "data", .. parts]);
    }
}
