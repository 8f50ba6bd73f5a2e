// Editor tools: create the catalog asset and build the Linux player from the command line.
//
//   Unity -batchmode -quit -projectPath unity_pool/unity/UnityProject \
//         -executeMethod CoinScale.EditorTools.CoinScaleBuild.BuildLinux \
//         -coinScaleBuildPath Build/Linux/CoinScalePlayer.x86_64 -logFile -
using System;
using System.IO;
using CoinScale.Rendering;
using UnityEditor;
using UnityEditor.Build.Reporting;
using UnityEditor.SceneManagement;
using UnityEngine;
using UnityEngine.Rendering;

namespace CoinScale.EditorTools
{
    public static class CoinScaleBuild
    {
        private const string ResourcesFolder = "Assets/CoinScale/Resources";
        private const string CatalogPath = ResourcesFolder + "/" + CoinScaleCatalog.ResourceName + ".asset";
        private const string ScenePath = "Assets/CoinScale/Scenes/CoinScaleServer.unity";
        private const string DefaultBuildPath = "Build/Linux/CoinScalePlayer.x86_64";

        [MenuItem("CoinScale/Create Catalog")]
        public static void CreateCatalog()
        {
            var existing = AssetDatabase.LoadAssetAtPath<CoinScaleCatalog>(CatalogPath);
            if (existing != null)
            {
                Selection.activeObject = existing;
                Debug.Log("coin-scale: the catalog already exists at " + CatalogPath);
                return;
            }
            Directory.CreateDirectory(ResourcesFolder);
            var catalog = ScriptableObject.CreateInstance<CoinScaleCatalog>();
            catalog.FillNames();
            AssetDatabase.CreateAsset(catalog, CatalogPath);
            AssetDatabase.SaveAssets();
            Selection.activeObject = catalog;
            Debug.Log("coin-scale: created " + CatalogPath + "; fill in the prefabs, maps and materials");
        }

        [MenuItem("CoinScale/Build Linux Player")]
        public static void BuildLinuxFromMenu()
        {
            Build(DefaultBuildPath, false);
        }

        /// <summary>Entry point for -executeMethod; exits the editor with 0 on success, 1 on failure.</summary>
        public static void BuildLinux()
        {
            var path = DefaultBuildPath;
            var args = Environment.GetCommandLineArgs();
            for (var i = 0; i + 1 < args.Length; i++)
                if (args[i] == "-coinScaleBuildPath") path = args[i + 1];
            EditorApplication.Exit(Build(path, true) ? 0 : 1);
        }

        private static bool Build(string path, bool batch)
        {
            var catalog = AssetDatabase.LoadAssetAtPath<CoinScaleCatalog>(CatalogPath);
            if (catalog == null)
            {
                Debug.LogError("coin-scale: no catalog at " + CatalogPath + ". Fix: run CoinScale > Create Catalog and fill it.");
                return false;
            }
            var missing = catalog.Missing();
            if (missing.Count > 0)
                Debug.LogWarning("coin-scale: the catalog lacks " + string.Join(", ", missing.ToArray()));
            EnsureServerScene();
            // A normal desktop player (not the Dedicated Server target, which strips rendering),
            // Vulkan first, OpenGL Core as the fallback; linear colour so sRGB colours are exact.
            PlayerSettings.SetUseDefaultGraphicsAPIs(BuildTarget.StandaloneLinux64, false);
            PlayerSettings.SetGraphicsAPIs(BuildTarget.StandaloneLinux64,
                new[] { GraphicsDeviceType.Vulkan, GraphicsDeviceType.OpenGLCore });
            PlayerSettings.colorSpace = ColorSpace.Linear;
            PlayerSettings.runInBackground = true;
            PlayerSettings.usePlayerLog = true;
            PlayerSettings.fullScreenMode = FullScreenMode.Windowed;
            EditorUserBuildSettings.standaloneBuildSubtarget = StandaloneBuildSubtarget.Player;
            var report = BuildPipeline.BuildPlayer(new BuildPlayerOptions
            {
                scenes = new[] { ScenePath },
                locationPathName = path,
                target = BuildTarget.StandaloneLinux64,
                options = BuildOptions.None,
            });
            var ok = report.summary.result == BuildResult.Succeeded;
            Debug.Log("coin-scale: build " + report.summary.result + " -> " + path);
            if (!ok && !batch) EditorUtility.DisplayDialog("coin-scale", "Build failed; see the console.", "OK");
            return ok;
        }

        private static void EnsureServerScene()
        {
            if (File.Exists(ScenePath)) return;
            Directory.CreateDirectory(Path.GetDirectoryName(ScenePath));
            var scene = EditorSceneManager.NewScene(NewSceneSetup.EmptyScene, NewSceneMode.Single);
            EditorSceneManager.SaveScene(scene, ScenePath);
        }
    }
}
